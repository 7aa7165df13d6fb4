import { AdminError, type AdminContext } from './admin.js';

/**
 * Before a snapshot or template goes away (delete), the connections reading
 * its read-only export: with none, nothing to do; with some, EBUSY naming the
 * export and how many read it, unless forced, and then they are ended first
 * (each as a server shutdown ends it: requests in flight are answered), so
 * no client reads a layer while it is merged away. `key` is what the
 * server's export table knows it by within the pool: `VOL@SNAP` or `TMPL`.
 */
export async function releaseFrozenExport(ctx: Pick<AdminContext, 'poolName' | 'clientsOf' | 'disconnect'>, key: string, what: 'snapshot' | 'template', force: boolean): Promise<number> {
  const clients = ctx.clientsOf?.(key) ?? 0;
  if (clients === 0) return 0;
  const them = clients === 1 ? 'it' : 'them';
  if (!force) {
    throw new AdminError(
      'EBUSY',
      `${what} '${ctx.poolName}/${key}' is exported and read by ${clients} connected client${clients === 1 ? '' : 's'}; disconnect ${them} first, or force the delete to end ${clients === 1 ? 'its connection' : 'their connections'}`,
    );
  }
  return (await ctx.disconnect?.(key)) ?? 0;
}
