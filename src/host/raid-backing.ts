import { BlockDeviceError } from '../blockdev/index.js';
import { assembleArray, type AssembleOptions } from '../raid/index.js';
import type { OpenedArray, OpenPoolOptions } from './open-pool.js';
import { loadPending, repairPendingNow, savePending } from './pending-store.js';
import type { BackingType } from './pool-backing.js';
import { oneLine, PoolInUseError } from './pool-errors.js';
import type { PoolRecord, Registry } from './registry.js';
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
      array.rebuild({ rate: serving.rebuildRate }).catch((err: unknown) => say(`rebuild stopped: ${oneLine(err)}`));
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
