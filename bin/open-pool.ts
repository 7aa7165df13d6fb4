import fs from 'node:fs';
import { BlockDeviceError, FileDevice, type BlockDevice } from '../src/blockdev/index.js';
import { Pool, PoolError, type VolumeInfo } from '../src/qcowlike/index.js';
import { assembleArray, type AssembleOptions, type RaidArray } from '../src/raid/index.js';
import { jobsFor } from '../src/host/jobs.js';
import { followReclaimAtOpen } from '../src/host/reclaim-job.js';
import { rebuildJob } from '../src/host/rebuild-job.js';
import { loadPending, repairPendingNow, savePending } from './pending-store.js';
import { Registry, type PoolRecord } from './registry.js';

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
 * command goes through here, so when RAID arrays arrive only this function
 * (and openBacking) learns to assemble them.
 */
export interface OpenPoolOptions {
  readOnly: boolean;
  /** The pool is being served: a RAID array under it rebuilds in the background (rate in bytes/s, 0 = unlimited). */
  serving?: { rebuildRate: number };
  /** Open the pool file or the RAID members with O_DIRECT, bypassing the host page cache (`serve --cache none`). */
  direct?: boolean;
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
  const { dev, raid } = await openBacking(registry, record, opts);
  let pool: Pool;
  try {
    pool = await Pool.open(dev, { readOnly });
  } catch (err) {
    await dev.close();
    if (err instanceof PoolError) throw new PoolError(err.code, `pool '${record.name}': ${oneLine(err)}`);
    throw new Error(`pool '${record.name}': ${oneLine(err)}`);
  }
  if (!readOnly) followReclaimAtOpen(jobsFor(registry.home, record.name), pool);
  const close = async (): Promise<void> => {
    await pool.close();
    // What a read-only open served from a good copy but could not rewrite waits for the next read-write open.
    if (raid) savePending(registry.home, raid.array);
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

async function openBacking(registry: Registry, record: PoolRecord, opts: OpenPoolOptions): Promise<{ dev: BlockDevice; raid?: OpenedArray }> {
  if (record.backing.kind === 'raid') {
    const raid = await openArray(registry, record, opts);
    return { dev: raid.array, raid };
  }
  const path = registry.filePath(record);
  if (!fs.existsSync(path)) throw new Error(`pool '${record.name}': its file ${path} is missing`);
  try {
    return { dev: FileDevice.open(path, { readOnly: opts.readOnly, direct: opts.direct ?? false }) };
  } catch (err) {
    if (err instanceof BlockDeviceError && err.code === 'EBUSY') {
      throw new PoolInUseError(`pool '${record.name}' is in use by another process (${path} is locked)`);
    }
    throw new Error(`pool '${record.name}': ${oneLine(err)}`);
  }
}

/**
 * Assembles a pool's array from its registered members: degraded with a
 * warning when members are missing, refused only when more are gone than the
 * level survives. A served pool rebuilds a waiting member in the background.
 */
async function openArray(registry: Registry, record: PoolRecord, { readOnly, serving, direct }: OpenPoolOptions): Promise<OpenedArray> {
  const say = (m: string): void => void process.stderr.write(`strata: pool '${record.name}': ${m}\n`);
  const listeners = new Set<(message: string) => void>();
  const defaultRate = serving?.rebuildRate ?? 0;
  // The array reads rebuildRate from these options each time it starts a
  // background rebuild (a spare taking over, add, replace), so rebuildsAt can
  // give one command its own rate.
  const options: AssembleOptions = {
    readOnly,
    direct: direct ?? false,
    autoRebuild: serving !== undefined,
    rebuildRate: defaultRate,
    startRebuild: (array) => rebuildJob(jobsFor(registry.home, record.name), array, options.rebuildRate ?? 0),
    onEvent: (m) => {
      say(m);
      for (const l of listeners) l(m);
    },
  };
  try {
    const { array, warnings } = await assembleArray(registry.memberPaths(record), options);
    for (const w of warnings) say(w);
    loadPending(registry.home, array, say);
    await repairPendingNow(registry.home, array, say);
    if (serving && array.needsRebuild()) {
      rebuildJob(jobsFor(registry.home, record.name), array, serving.rebuildRate).catch((err: unknown) => say(`rebuild stopped: ${oneLine(err)}`));
    }
    let queue: Promise<unknown> = Promise.resolve();
    return {
      array,
      rebuildsAt: <T>(rate: number, fn: () => Promise<T>): Promise<T> => {
        // One at a time: the rate is shared state while fn runs.
        const run = queue.then(async () => {
          options.rebuildRate = rate;
          try {
            return await fn();
          } finally {
            options.rebuildRate = defaultRate;
          }
        });
        queue = run.catch(() => undefined);
        return run;
      },
      listen: (listener) => {
        listeners.add(listener);
        return () => void listeners.delete(listener);
      },
    };
  } catch (err) {
    if (err instanceof BlockDeviceError && err.code === 'EBUSY') {
      throw new PoolInUseError(`pool '${record.name}' is in use by another process (its RAID members are locked)`);
    }
    throw new Error(`pool '${record.name}': ${oneLine(err)}`);
  }
}

/** The pool's device is locked by another process (a server, another command): nothing may touch it. */
export class PoolInUseError extends Error {}

export function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ');
}

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
