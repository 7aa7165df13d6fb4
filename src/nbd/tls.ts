import fs from 'node:fs';
import type net from 'node:net';
import tls from 'node:tls';

/**
 * off: STARTTLS is refused (NOTLS). on: clients may upgrade (SELECTIVETLS with
 * no TLS-only export). require: every option but STARTTLS and ABORT is refused
 * until TLS is up (FORCEDTLS), as qemu-nbd does with --tls-creds.
 */
export type TlsMode = 'off' | 'on' | 'require';

export interface TlsSetup {
  mode: TlsMode;
  /** How each STARTTLS is served; present unless mode is off. */
  server?: tls.TlsOptions;
  /** Identities and keys when authenticating with pre-shared keys. */
  psk?: Map<string, Buffer>;
}

export interface TlsFiles {
  mode: TlsMode;
  cert?: string;
  key?: string;
  /** CA that client certificates must chain to; without it clients are not asked for one. */
  ca?: string;
  /** A psktool-style key file: one `identity:hexkey` per line. */
  psk?: string;
}

/** Loads certificates or keys; errors name the file and what is wrong with it. */
export function loadTls(files: TlsFiles): TlsSetup {
  if (files.mode === 'off') {
    if (files.cert || files.key || files.psk || files.ca) throw new Error('certificate, key, CA and PSK files need TLS on or required');
    return { mode: 'off' };
  }
  if (files.psk && (files.cert || files.key || files.ca)) throw new Error('give either a PSK file or a certificate with its key (and a CA), not both');
  if (files.psk) {
    const psk = readPskFile(files.psk);
    // PSK suites only exist up to TLS 1.2 in OpenSSL's server callback API.
    const server: tls.TlsOptions = {
      ciphers: 'PSK',
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      pskCallback: (_socket, identity) => psk.get(identity) ?? null,
    };
    return { mode: files.mode, server, psk };
  }
  if (!files.cert || !files.key) throw new Error(`TLS ${files.mode} needs a certificate and its key, or a PSK file`);
  const cert = readFile(files.cert, 'certificate');
  const key = readFile(files.key, 'key');
  const ca = files.ca === undefined ? undefined : readFile(files.ca, 'CA certificate');
  const server: tls.TlsOptions = { cert, key, minVersion: 'TLSv1.2', ...(ca ? { ca, requestCert: true, rejectUnauthorized: true } : {}) };
  try {
    // Fails now, with the file names, rather than at the first client.
    tls.createSecureContext(server);
  } catch (err) {
    throw new Error(`${files.cert} / ${files.key}${files.ca ? ` / ${files.ca}` : ''}: not a usable certificate, key and CA (${err instanceof Error ? err.message : String(err)})`);
  }
  return { mode: files.mode, server };
}

function readFile(path: string, what: string): Buffer {
  try {
    return fs.readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read TLS ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

export function readPskFile(path: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  const lines = readFile(path, 'PSK file').toString('utf8').split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.lastIndexOf(':');
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^([0-9a-fA-F]{2})+$/.test(hex)) throw new Error(`${path} line ${i + 1}: expected identity:hexkey`);
    keys.set(identity, Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw new Error(`${path}: no identity:hexkey line`);
  return keys;
}

/**
 * Upgrades a plain socket, just after the STARTTLS ACK was written, to TLS as
 * the server side. The socket is handed to a (never listening) tls.Server,
 * not wrapped in a bare TLSSocket: only then does a TLS error after the
 * handshake (a corrupt or forged record) surface as an 'error' that ends the
 * connection; a bare server-side TLSSocket swallows it and hangs.
 */
export function upgradeToTls(socket: net.Socket, setup: TlsSetup, timeoutMs: number): Promise<tls.TLSSocket> {
  const server = tls.createServer({ ...setup.server, handshakeTimeout: timeoutMs });
  return new Promise((resolve, reject) => {
    const closed = (): void => reject(new Error('connection closed during the TLS handshake'));
    socket.once('close', closed);
    server.once('tlsClientError', (err) => {
      socket.destroy();
      reject(err);
    });
    server.once('secureConnection', (secure: tls.TLSSocket) => {
      socket.off('close', closed);
      secure.on('error', () => secure.destroy());
      resolve(secure);
    });
    server.emit('connection', socket);
  });
}
