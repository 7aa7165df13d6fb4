import { Pool, PoolError, type VolumeInfo } from '../qcowlike/index.js';
import type { RaidArray } from '../raid/index.js';
import { hostMessage } from './host-messages.js';
import { backingType } from './pool-backing.js';
import { oneLine } from './pool-errors.js';
import { Registry, type PoolRecord } from './registry.js';
import { jobsFor } from './jobs.js';
import { followReclaimAtOpen } from './reclaim-job.js';
import { settleMigrationsAtOpen } from './migration-recovery.js';

export interface OpenedPool {
  pool: Pool;
  record: PoolRecord;
  /** The array under a RAID-backed pool (the pool's device), for the commands that manage it while the pool is open. */
  raid?: OpenedArray;
  /** Checkpoints and closes the pool and the device under it. */
  close: () => Promise<void>;
}

export interface OpenedArray {
  array: RaidArray;
  /**
   * Runs `fn` (add, replace, fail…) so that a rebuild it starts in the
   * background goes at `rate` bytes/s instead of the server's default.
   */
  rebuildsAt<T>(rate: number, fn: () => Promise<T>): Promise<T>;
  /** Also sends the array's events (failures, spares taking over, rebuilds ending) to `listener`, until the returned function is called. */
  listen(listener: (message: string) => void): () => void;
}

/**
 * The one place a registered pool is brought up from its record: every
 * command goes through here; what a pool lives on (a file, a RAID array)
 * opens itself behind one interface (pool-backing.ts).
 */
export interface OpenPoolOptions {
  readOnly: boolean;
  /** The pool is being served: a RAID array under it rebuilds in the background (rate in bytes/s, 0 = unlimited). */
  serving?: { rebuildRate: number };
  /** Open the pool file or the RAID members with O_DIRECT, bypassing the host page cache (the server's uncached mode). */
  direct?: boolean;
  /** Takes what opening found worth telling (a degraded array, a rebuild ending); default: the host's message sink. */
  onMessage?: (message: string) => void;
}

export async function openRegisteredPool(home: string, name: string, opts: OpenPoolOptions): Promise<OpenedPool> {
  const registry = new Registry(home);
  const record = registry.get(name);
  try {
    return { ...(await openPool(registry, record, opts)), record };
  } catch (err) {
    // A pool stopped uncleanly has journal left to replay, which a read-only
    // open refuses. Nobody else holds it (the device lock said so): replaying
    // is recovery, not a change to anything the user wrote.
    if (!(opts.readOnly && err instanceof PoolError && err.code === 'EBUSY')) throw err;
    return { ...(await openPool(registry, record, { ...opts, readOnly: false })), record };
  }
}

async function openPool(registry: Registry, record: PoolRecord, opts: OpenPoolOptions): Promise<{ pool: Pool; raid?: OpenedArray; close: () => Promise<void> }> {
  const { readOnly } = opts;
  const say = opts.onMessage ?? hostMessage;
  const { dev, raid, afterClose } = await backingType(record.backing).open(registry, record, opts, (m) => say(`pool '${record.name}': ${m}`));
  let pool: Pool;
  try {
    pool = await Pool.open(dev, { readOnly });
  } catch (err) {
    await dev.close();
    await afterClose?.();
    if (err instanceof PoolError) throw new PoolError(err.code, `pool '${record.name}': ${oneLine(err)}`);
    throw new Error(`pool '${record.name}': ${oneLine(err)}`);
  }
  if (!readOnly) {
    followReclaimAtOpen(jobsFor(registry.home, record.name), pool);
    await settleMigrationsAtOpen(registry.home, record.name, pool, (m) => say(`pool '${record.name}': ${m}`), async (other) => {
      const o = await openPool(registry, registry.get(other), { readOnly: false, onMessage: say });
      return { pool: o.pool, close: o.close };
    });
  }
  const close = async (): Promise<void> => {
    await pool.close();
    await afterClose?.();
  };
  return { pool, ...(raid ? { raid } : {}), close };
}

/** Runs `fn` on an open pool and always closes it, so the journal is checkpointed and the lock released. */
export async function withPool<T>(home: string, name: string, opts: OpenPoolOptions, fn: (opened: OpenedPool) => Promise<T>): Promise<T> {
  const opened = await openRegisteredPool(home, name, opts);
  let result: T;
  try {
    result = await fn(opened);
  } catch (err) {
    await opened.close().catch(() => undefined);
    throw err;
  }
  await opened.close();
  return result;
}

export { oneLine, PoolInUseError } from './pool-errors.js';

/** The volume's record, or an error naming both the volume and the pool. */
export function findVolume(pool: Pool, poolName: string, volume: string): Promise<VolumeInfo> {
  return aboutVolume(poolName, volume, () => pool.volumeInfo(volume));
}

/**
 * Runs a pool call about one volume, and says "missing" or "already there"
 * the way the user named it (the pool by its registered name, not its file).
 */
export async function aboutVolume<T>(poolName: string, volume: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof PoolError && err.code === 'ENOENT') throw new Error(`volume '${volume}' not found in pool '${poolName}'`);
    if (err instanceof PoolError && err.code === 'EEXIST') throw new Error(`volume '${poolName}/${volume}' already exists`);
    throw err;
  }
}
