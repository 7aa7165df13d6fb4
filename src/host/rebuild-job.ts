import type { RaidArray, RebuildProgress } from '../raid/index.js';
import type { JobRecord } from './job-record.js';
import type { Jobs } from './jobs.js';

/** How a rebuild cut short goes on: the array keeps its checkpoint in the superblocks. */
const REBUILD_RESUMES = 'resumes from its checkpoint when the pool is next served, or with: strata raid rebuild POOL';

/** The rebuild job running in this process for an array, which a second caller joins instead of starting another. */
const running = new WeakMap<RaidArray, { done: Promise<void>; follow: Set<(p: RebuildProgress) => void> }>();

/**
 * Runs the array's rebuild as a job of its pool (or joins the one running),
 * from its checkpoint, at `rate` bytes/s. A job of an earlier process that
 * was interrupted mid-rebuild is marked as resumed by this one. Cancelling
 * the job stops the rebuild at a checkpoint; the role stays rebuilding.
 */
export function rebuildJob(jobs: Jobs, array: RaidArray, rate: number, onProgress?: (p: RebuildProgress) => void): Promise<void> {
  const joined = running.get(array);
  if (joined) {
    if (onProgress) joined.follow.add(onProgress);
    return joined.done.finally(() => onProgress && joined.follow.delete(onProgress));
  }
  const follow = new Set<(p: RebuildProgress) => void>(onProgress ? [onProgress] : []);
  // A job list that cannot be written (a full or read-only home) must not stop the rebuild.
  let earlier: JobRecord[] = [];
  try {
    earlier = jobs.recover().filter((j) => j.kind === 'rebuild');
  } catch {
    earlier = [];
  }
  const { rows, chunk } = array.geometry;
  const done = jobs
    .run({ kind: 'rebuild', target: array.status().name, total: rows * chunk, rate, resumes: REBUILD_RESUMES.replace('POOL', jobs.pool) }, async (ctl) => {
      for (const j of earlier) jobs.resumed(j.id, ctl.id);
      await array.rebuild({
        rate,
        signal: ctl.signal,
        onProgress: (p) => {
          ctl.progress(p.bytesDone, p.bytesTotal);
          for (const f of follow) f(p);
        },
      });
    })
    .finally(() => running.delete(array));
  running.set(array, { done, follow });
  return done;
}
