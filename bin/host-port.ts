/** Where `strata serve` listens unless told otherwise (the IANA NBD port, loopback only). */
export const DEFAULT_LISTEN = '127.0.0.1:10809';

/** HOST:PORT or [IPv6]:PORT, as given to `flag`. */
export function parseHostPort(flag: string, text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`invalid ${flag} '${text}' (use HOST:PORT, [IPv6]:PORT)`);
  return { host: m[1] ?? m[2]!, port };
}
