import fs from 'node:fs';
import { BlockDeviceError } from '../blockdev/index.js';
import { Pool } from '../qcowlike/index.js';
import { assembleArray, createArray, type AssembleOptions } from '../raid/index.js';
import { isFileTooLarge, tooLargeMessage } from './file-size-limit.js';
import { jobsFor } from './jobs.js';
import { rebuildJob } from './rebuild-job.js';
import { makeHome, removeMadeDirs } from './home.js';
import type { OpenedArray, OpenPoolOptions } from './open-pool.js';
import { loadPending, repairPendingNow, savePending } from './pending-store.js';
import type { BackingType } from './pool-backing.js';
import { oneLine, PoolInUseError } from './pool-errors.js';
import type { PoolRecord, RaidLevel, Registry } from './registry.js';
import { formatSize } from './size.js';

/** A pool on a RAID array of member files, assembled from the members its record lists. */
export const raidBacking: BackingType = {
  absolute: (_registry, record) => record.backing,
  describe: (b) => (b.kind === 'raid' ? `raid${b.level} (${b.members.join(', ')}; chunk ${formatSize(b.chunk)})` : ''),
  files: (registry, record) => registry.memberPaths(record),
  open: async (registry, record, opts, say) => {
    const raid = await openArray(registry, record, opts, say);
    // What a read-only open served from a good copy but could not rewrite waits for the next read-write open.
    return { dev: raid.array, raid, afterClose: () => savePending(registry.home, raid.array) };
  },
};

/**
 * Assembles a pool's array from its registered members: degraded with a
 * warning when members are missing, refused only when more are gone than the
 * level survives. A served pool rebuilds a waiting member in the background.
 */
async function openArray(registry: Registry, record: PoolRecord, { readOnly, serving, direct }: OpenPoolOptions, say: (message: string) => void): Promise<OpenedArray> {
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

export interface RaidSpec {
  members: string[];
  spares: string[];
  /** Array bytes; undefined: what the existing members hold. */
  size: number | undefined;
  chunk: number | undefined;
  copies: number | undefined;
  force: boolean;
}

/**
 * A pool on a new RAID array: missing member files are created (sparse) to
 * fit the array. `explain` says the array's refusals (a member in use, one
 * too small) in the caller's terms; other errors are said as they are.
 */
export async function createRaidBacked(registry: Registry, name: string, level: RaidLevel, spec: RaidSpec, clusterSize: number | undefined, explain: (err: unknown) => string | undefined): Promise<void> {
  const { members, spares, size, chunk, copies, force } = spec;
  const madeDirs = makeHome(registry.home);
  const files = [...members, ...spares];
  const existed = files.filter((m) => fs.existsSync(m));
  // Only member files this command made are removed, whichever step failed.
  const undo = (): void => {
    for (const m of files) if (!existed.includes(m)) fs.rmSync(m, { force: true });
    removeMadeDirs(madeDirs);
  };
  const failure = (err: unknown): Error => {
    const file = err instanceof BlockDeviceError ? err.device : undefined;
    const why = isFileTooLarge(err) && file !== undefined ? `member ${tooLargeMessage(file)}` : (explain(err) ?? oneLine(err));
    return new Error(`cannot create pool '${name}': ${why}`);
  };
  let array;
  try {
    array = await createArray({
      level: Number(level) as 0 | 1 | 5 | 6 | 10,
      members,
      name,
      force,
      ...(spares.length > 0 ? { spares } : {}),
      ...(size === undefined ? {} : { size }),
      ...(chunk === undefined ? {} : { chunk }),
      ...(copies === undefined ? {} : { copies }),
    });
  } catch (err) {
    // createArray closes what it opened; the members it created stay behind unless removed here.
    const error = failure(err);
    undo();
    throw error;
  }
  try {
    const created = await Pool.create(array, clusterSize === undefined ? {} : { clusterSize });
    await created.close();
    // Spares are registered with the members, as a later `raid add` of a spare records them: assembly tells them apart.
    registry.add({ name, backing: { kind: 'raid', level, members: files, chunk: array.geometry.chunk }, created: new Date().toISOString() });
  } catch (err) {
    await array.close().catch(() => undefined);
    const error = failure(err);
    undo();
    throw error;
  }
}
