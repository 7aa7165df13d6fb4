import fs from 'node:fs';
import path from 'node:path';
import { nbdUri, type ListenAddress } from '../src/nbd/index.js';

/** The credentials a client needs, as `serve` was given them. */
export type ClientTls =
  | { kind: 'x509'; cert: string; clientCertRequired: boolean }
  | { kind: 'psk'; file: string; identity: string };

/** What `serve` prints for clients: ready-to-run lines, and notes (stderr) for whatever they leave to fill in. */
export interface ClientLines {
  /** libnbd URIs (nbdinfo, nbdcopy, nbdfuse): nbds:// with the TLS parameters they need. */
  tlsUris: string[];
  qemu: string;
  notes: string[];
}

/**
 * The QEMU and libnbd lines for an export. Without TLS, QEMU takes the URI in
 * `-drive file=…,format=raw`. With TLS it needs a tls-creds object, which a
 * URI cannot name, so the disk is a `-blockdev driver=nbd` node (where
 * `format=` does not apply) with a virtio device on it. The credentials
 * directory is the real one when serve's own files can be it (QEMU reads
 * DIR/ca-cert.pem, DIR/keys.psk), else a placeholder with a note saying what
 * goes in it.
 */
export function clientLines(addresses: ListenAddress[], name: string, tls: ClientTls | undefined): ClientLines {
  const first = addresses[0]!;
  if (!tls) return { tlsUris: [], qemu: `qemu-system-x86_64 -drive file=${nbdUri(first, name).replace(/,/g, ',,')},format=raw,if=virtio`, notes: [] };
  const notes: string[] = [];
  let creds: string;
  let query: string;
  let user = '';
  if (tls.kind === 'x509') {
    const dir = path.dirname(path.resolve(tls.cert));
    const usable = fs.existsSync(path.join(dir, 'ca-cert.pem')) && !tls.clientCertRequired;
    const shown = usable ? dir : 'CERTDIR';
    if (!usable) notes.push(`in the QEMU line, CERTDIR is a directory holding ca-cert.pem (the CA that signed --tls-cert)${tls.clientCertRequired ? ', and client-cert.pem with client-key.pem signed by --tls-ca' : ''}`);
    creds = `tls-creds-x509,id=tls0,endpoint=client,dir=${escape(shown)}`;
    query = usable ? `?tls-certificates=${uriPath(dir)}` : '';
  } else {
    const file = path.resolve(tls.file);
    const usable = path.basename(file) === 'keys.psk';
    const shown = usable ? path.dirname(file) : 'KEYDIR';
    if (!usable) notes.push(`in the QEMU line, KEYDIR is a directory holding --tls-psk as keys.psk (QEMU reads that name only)`);
    creds = `tls-creds-psk,id=tls0,endpoint=client,dir=${escape(shown)},username=${escape(tls.identity)}`;
    query = `?tls-psk-file=${uriPath(file)}`;
    user = `${encodeURIComponent(tls.identity)}@`;
  }
  const where = 'socket' in first ? `server.type=unix,server.path=${escape(first.socket)}` : `server.type=inet,server.host=${escape(first.host)},server.port=${first.port}`;
  const qemu = `qemu-system-x86_64 -object ${creds} -blockdev driver=nbd,node-name=strata0,${where},export=${escape(name)},tls-creds=tls0 -device virtio-blk-pci,drive=strata0`;
  const tlsUris = addresses.map((a) => withUser(nbdUri(a, name, true), user, query));
  return { tlsUris, qemu, notes };
}

/** QEMU's option syntax doubles a comma inside a value. */
function escape(value: string): string {
  return value.replace(/,/g, ',,');
}

function uriPath(p: string): string {
  return encodeURIComponent(p).replace(/%2F/g, '/');
}

/** Puts `user@` into the authority and `query` at the end (a Unix-socket URI already has `?socket=`). */
function withUser(uri: string, user: string, query: string): string {
  const withAuth = user === '' ? uri : uri.replace(/^(nbds(?:\+unix)?:\/\/)/, `$1${user}`);
  if (query === '') return withAuth;
  return withAuth.includes('?') ? `${withAuth}&${query.slice(1)}` : `${withAuth}${query}`;
}
