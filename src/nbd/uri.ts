import type { ListenAddress } from './server.js';

/** The URI clients (qemu, libnbd) take for an export at a listening address. */
export function nbdUri(address: ListenAddress, exportName: string, tls = false): string {
  const name = encodeURIComponent(exportName).replace(/%40/g, '@').replace(/%2F/g, '/');
  if ('socket' in address) return `nbd${tls ? 's' : ''}+unix:///${name}?socket=${encodeURIComponent(address.socket).replace(/%2F/g, '/')}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `nbd${tls ? 's' : ''}://${host}:${address.port}/${name}`;
}
