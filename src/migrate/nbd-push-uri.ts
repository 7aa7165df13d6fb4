import type { NbdClientOptions } from '../nbd/index.js';

/** Where a push goes: the options the NBD client connects with, and the URI as the user gave it (for messages). */
export interface PushTargetAddress {
  uri: string;
  connect: NbdClientOptions;
}

/** Whether a migrate destination names an NBD export rather than a pool. */
export function isNbdUri(text: string): boolean {
  return /^nbds?(\+unix)?:\/\//.test(text);
}

/**
 * Reads `nbd://HOST[:PORT]/EXPORT` and `nbd+unix:///EXPORT?socket=PATH`, the
 * forms qemu and libnbd take (the export name is percent-decoded, the default
 * port is 10809). TLS forms are refused: this client holds no credentials.
 */
export function parseNbdUri(text: string): PushTargetAddress {
  const bad = (why: string): Error => new Error(`'${text}' is not an NBD URI this host can push to: ${why} (nbd://HOST:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH)`);
  if (/^nbds(\+unix)?:\/\//.test(text)) throw bad('TLS targets (nbds://) are not supported');
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw bad('it does not parse as a URI');
  }
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (url.protocol === 'nbd+unix:') {
    const socket = url.searchParams.get('socket');
    if (!socket) throw bad('nbd+unix needs ?socket=PATH');
    if (url.host !== '') throw bad('nbd+unix takes no host');
    return { uri: text, connect: { socket, export: exportName } };
  }
  if (url.protocol !== 'nbd:') throw bad(`unknown scheme '${url.protocol}'`);
  if (url.hostname === '') throw bad('no host');
  const port = url.port === '' ? 10809 : Number(url.port);
  // URL keeps IPv6 literals in brackets; the socket layer wants them bare.
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return { uri: text, connect: { host, port, export: exportName } };
}
