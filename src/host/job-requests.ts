import type { JobRecord } from './job-record.js';
import type { Jobs } from './jobs.js';

/** The job verbs as control requests: the server that runs a pool's jobs is the one that can cancel them. */
export type JobRequest = { op: 'job-list' } | { op: 'job-show'; id: number } | { op: 'job-cancel'; id: number };

export const JOB_OPS: ReadonlySet<string> = new Set(['job-list', 'job-show', 'job-cancel']);

export function isJobRequest(req: { op: string }): req is JobRequest {
  return JOB_OPS.has(req.op);
}

/** Checks a job request field by field; the error names what is wrong. */
export function parseJobRequest(raw: Record<string, unknown>): JobRequest {
  const id = (): number => {
    const v = raw.id;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new Error(`'${String(raw.op)}' needs 'id' (a job number)`);
    return v;
  };
  switch (raw.op) {
    case 'job-list':
      return { op: 'job-list' };
    case 'job-show':
      return { op: 'job-show', id: id() };
    case 'job-cancel':
      return { op: 'job-cancel', id: id() };
    default:
      throw new Error(`unknown request '${String(raw.op)}'`);
  }
}

export function runJobRequest(jobs: Jobs, req: JobRequest): JobRecord[] | JobRecord {
  switch (req.op) {
    case 'job-list':
      return jobs.list();
    case 'job-show':
      return jobs.get(req.id);
    case 'job-cancel':
      return jobs.cancel(req.id);
  }
}
