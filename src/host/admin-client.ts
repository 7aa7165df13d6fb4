import { runAdmin, type AdminRequest, type AdminResult } from './admin.js';
import { jobsFor } from './jobs.js';
import { ControlClient } from './control-client.js';
import { withPool, type OpenPoolOptions } from './open-pool.js';

/**
 * Runs one administrative verb on a pool, wherever the pool is: over the
 * control socket of the `strata serve` that holds it, or in-process on a
 * pool this command opens (read-only unless the verb writes). The verb is
 * the same function either way (src/host/admin.ts), so is its result.
 */
export async function adminOnPool<R extends AdminRequest>(home: string, poolName: string, req: R, open: Omit<OpenPoolOptions, 'serving'>, signal?: AbortSignal): Promise<AdminResult<R>> {
  const client = await ControlClient.connect(home, poolName);
  if (client) {
    try {
      const reply = await client.request(req);
      return reply.result as AdminResult<R>;
    } finally {
      client.close();
    }
  }
  return withPool(home, poolName, open, ({ pool }) => runAdmin(pool, req, { poolName, jobs: jobsFor(home, poolName), ...(signal ? { signal } : {}) }));
}
