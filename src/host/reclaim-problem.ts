import type { JobRecord } from './job-record.js';

/**
 * Why the space of deleted volumes is not all free, from the pool's jobs:
 * the error of the last reclaim job, when it failed or was interrupted and
 * no reclaim has finished since (a later one that is done freed it all).
 */
export function reclaimProblem(jobs: readonly JobRecord[]): string | undefined {
  const last = jobs.filter((j) => j.kind === 'reclaim' && j.state !== 'running').at(-1);
  if (!last || last.state === 'done' || last.state === 'cancelled') return undefined;
  return `job ${last.id} (${last.target}): ${last.error ?? last.state}; retried at the next read-write open of the pool`;
}
