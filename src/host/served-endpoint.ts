import type { ListenAddress } from '../nbd/server.js';

/**
 * Where a served volume's data can be reached: the one control request that
 * lets import and export on a served pool move their data over NBD, through
 * the server's own exports, while the pool stays locked by the server.
 */
export interface EndpointRequest {
  op: 'nbd-endpoint';
  /** A volume or a template by name, or a snapshot as `VOL@SNAP` (the names the server exports them by). */
  volume: string;
}

export const ENDPOINT_OP = 'nbd-endpoint';

export interface ServedEndpoint {
  /** The addresses the server listens on, as bound (empty until it listens). */
  listen: ListenAddress[];
  tls: 'off' | 'on' | 'require';
  /** The volume's export name now; null when it is not exported (missing, incomplete, or left out by `serve --export`). */
  exportName: string | null;
  /** Clients connected to the volume now. */
  clients: number;
  readOnly: boolean;
}

const LAYER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(@[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$/;

/** Checks an endpoint request that came over the control socket. */
export function parseEndpointRequest(raw: Record<string, unknown>): EndpointRequest {
  const v = raw.volume;
  if (typeof v !== 'string' || !LAYER_NAME.test(v)) throw new Error(`'${ENDPOINT_OP}' needs 'volume' (a volume or template name, or VOL@SNAP)`);
  return { op: ENDPOINT_OP, volume: v };
}

/**
 * The listener a local client should use: the Unix socket when there is one
 * (no TCP stack, no address to guess), else the first TCP address, with a
 * wildcard host turned into loopback. Undefined when TLS is required, since
 * this client holds none of the server's credentials.
 */
export function localListener(e: ServedEndpoint): ListenAddress | undefined {
  if (e.tls === 'require') return undefined;
  return e.listen.find((a) => 'socket' in a) ?? localTcp(e.listen);
}

/** The first TCP listener, as this host reaches it: a wildcard host becomes loopback. */
export function localTcp(listen: ListenAddress[]): { host: string; port: number } | undefined {
  const tcp = listen.find((a): a is { host: string; port: number } => 'host' in a);
  if (!tcp) return undefined;
  const host = tcp.host === '0.0.0.0' || tcp.host === '' ? '127.0.0.1' : tcp.host === '::' ? '::1' : tcp.host;
  return { host, port: tcp.port };
}
