import type { Pool } from '../qcowlike/index.js';
import type { JobRecord } from './job-record.js';
import type { Jobs } from './jobs.js';

const RECLAIM_RESUMES = 'resumes at the next read-write open of the pool';

/**
 * Records the reclaiming an open started in the background (deletes that a
 * crash or an error cut short) as a job, so that its failure is the job's
 * error instead of going unseen; reclaim jobs of a process that died are
 * marked as resumed by it. Also writes down every job of a dead process as
 * interrupted.
 */
export function followReclaimAtOpen(jobs: Jobs, pool: Pool): void {
  let earlier: JobRecord[] = [];
  try {
    earlier = jobs.recover().filter((j) => j.kind === 'reclaim');
  } catch {
    // The job list cannot be written (a full or read-only home): the pool opens all the same, and a later open writes it down.
  }
  const r = pool.reclaimAtOpen;
  if (r.layers === 0) return;
  const target = `${r.layers} deleted volume${r.layers === 1 ? '' : 's'}`;
  jobs
    .run({ kind: 'reclaim', target, resumes: RECLAIM_RESUMES }, async (ctl) => {
      for (const j of earlier) jobs.resumed(j.id, ctl.id);
      await r.done;
      if (r.error) throw r.error;
    })
    .catch(() => undefined);
}

/** A volume delete, whose freeing of the volume's space is a job (a failure there is recorded as its error, and retried at the next open). */
export function deleteAsJob(jobs: Jobs | undefined, pool: Pool, volume: string): Promise<void> {
  if (!jobs) return pool.deleteVolume(volume);
  return jobs.run({ kind: 'reclaim', target: `${jobs.pool}/${volume}`, resumes: RECLAIM_RESUMES }, () => pool.deleteVolume(volume));
}
