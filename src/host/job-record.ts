/** Long work on a pool that a user may want to follow, cancel, or learn the end of after a crash. */
export type JobKind = 'rebuild' | 'scrub' | 'reclaim' | 'import' | 'export' | 'snapshot-delete' | 'flatten' | 'clone' | 'send' | 'receive' | 'migrate';

export const JOB_STATES = ['running', 'done', 'failed', 'cancelled', 'interrupted'] as const;
export type JobState = (typeof JOB_STATES)[number];

export interface JobRecord {
  /** Unique within the pool, never reused (the next id is one above the highest recorded). */
  id: number;
  kind: JobKind;
  pool: string;
  /** What the job works on: a volume, a file, the array. */
  target: string;
  state: JobState;
  bytesDone: number;
  /** 0 while the total is not known. */
  bytesTotal: number;
  /** Bytes per second the work is held to; absent when the work has no limit. */
  rate?: number;
  startedAt: string;
  endedAt?: string;
  /** Why the job ended when it did not end done. */
  error?: string;
  /** The process that runs (or ran) the job, and when that process started, so a reused pid is not taken for it. */
  pid: number;
  pidStart?: string;
  /** What happens to the work when its process dies (it resumes by itself), for an interrupted job. */
  resumes?: string;
  /** What to run to start the work again, when it does not resume by itself. */
  restart?: string;
}

export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(['done', 'failed', 'cancelled', 'interrupted']);
