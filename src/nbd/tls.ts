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
  /** Present unless mode is off. */
  context?: tls.SecureContext;
  /** Identities and keys when authenticating with pre-shared keys. */
  psk?: Map<string, Buffer>;
  /** Clients must present a certificate signed by the CA given with --tls-ca. */
  verifyClients?: boolean;
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
    if (files.cert || files.key || files.psk || files.ca) throw new Error('--tls-cert, --tls-key, --tls-ca and --tls-psk need --tls on or --tls require');
    return { mode: 'off' };
  }
  if (files.psk && (files.cert || files.key || files.ca)) throw new Error('give either --tls-psk or --tls-cert with --tls-key (and --tls-ca), not both');
  if (files.psk) {
    const psk = readPskFile(files.psk);
    // PSK suites only exist up to TLS 1.2 in OpenSSL's server callback API.
    const context = tls.createSecureContext({ ciphers: 'PSK', maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2' });
    return { mode: files.mode, context, psk };
  }
  if (!files.cert || !files.key) throw new Error(`--tls ${files.mode} needs --tls-cert and --tls-key, or --tls-psk`);
  const cert = readFile(files.cert, 'certificate');
  const key = readFile(files.key, 'key');
  const ca = files.ca === undefined ? undefined : readFile(files.ca, 'CA certificate');
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext({ cert, key, minVersion: 'TLSv1.2', ...(ca ? { ca } : {}) });
  } catch (err) {
    throw new Error(`${files.cert} / ${files.key}${files.ca ? ` / ${files.ca}` : ''}: not a usable certificate, key and CA (${err instanceof Error ? err.message : String(err)})`);
  }
  return { mode: files.mode, context, verifyClients: ca !== undefined };
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

/** Upgrades a plain socket, just after the STARTTLS ACK was written, to TLS as the server side. */
export function upgradeToTls(socket: net.Socket, setup: TlsSetup, timeoutMs: number): Promise<tls.TLSSocket> {
  const psk = setup.psk;
  // TLSSocket takes the server's pskCallback as tls.createServer does; @types/node omits it here.
  const options: tls.TLSSocketOptions & Pick<tls.TlsOptions, 'pskCallback'> = { isServer: true, secureContext: setup.context! };
  if (psk) options.pskCallback = (_sock: tls.TLSSocket, identity: string) => psk.get(identity) ?? null;
  if (setup.verifyClients) {
    options.requestCert = true;
    options.rejectUnauthorized = true;
  }
  const secure = new tls.TLSSocket(socket, options);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('TLS handshake timed out')), timeoutMs);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      secure.destroy();
      reject(err);
    };
    secure.once('error', fail);
    secure.once('close', () => fail(new Error('connection closed during the TLS handshake')));
    secure.once('secure', () => {
      clearTimeout(timer);
      secure.off('error', fail);
      secure.removeAllListeners('close');
      resolve(secure);
    });
  });
}
