import path from 'node:path';
import type { JobKind, JobRecord } from './job-record.js';
import { interrupted, JobStore } from './job-store.js';
import { processAlive, processStart } from './process-liveness.js';

/** Progress reaches the file at most this often (the in-memory record is always current). */
const PERSIST_MS = 1000;

export interface JobSpec {
  kind: JobKind;
  target: string;
  /** Bytes the work will cover, when known at the start. */
  total?: number;
  rate?: number;
  /** Recorded for an interrupted job: how the work goes on by itself. */
  resumes?: string;
  /** Recorded for an interrupted job: what to run to start it again. */
  restart?: string;
  /** A signal of the caller's that also cancels the job (Ctrl-C on a command). */
  signal?: AbortSignal;
}

/** What the work sees of its job. */
export interface JobControl {
  readonly id: number;
  /** Aborted when the job is cancelled; the work stops at its next check and throws. */
  readonly signal: AbortSignal;
  progress(bytesDone: number, bytesTotal?: number): void;
}

/** A job that cannot be found, or cannot be cancelled from here. */
export class JobError extends Error {
  constructor(
    readonly code: 'ENOENT' | 'EINVAL' | 'EBUSY',
    message: string,
  ) {
    super(message);
    this.name = 'JobError';
  }
}

interface Live {
  rec: JobRecord;
  controller: AbortController;
  lastPersist: number;
}

/**
 * The jobs of one pool as seen by the process that runs them: each long
 * piece of work (rebuild, scrub, reclaim, import, export) goes through run(),
 * which records it as running, passes it an AbortSignal and a progress
 * callback, and records how it ended (done, failed with its error, or
 * cancelled). A job whose process dies stays "running" on disk and is read
 * back as interrupted (JobStore.read), with what resumes it or what to run.
 */
export class Jobs {
  readonly store: JobStore;
  private readonly live = new Map<number, Live>();
  private readonly pidStart = processStart(process.pid);
  /** Ids of jobs that could not be written down: negative, so they never meet a recorded one. */
  private unrecorded = 0;

  constructor(
    readonly home: string,
    readonly pool: string,
  ) {
    this.store = new JobStore(home, pool);
  }

  /** Writes down as interrupted the jobs whose process died; returns them (a host that resumes their work says so with resumed()). */
  recover(): JobRecord[] {
    return this.store.update((jobs) => {
      const found: JobRecord[] = [];
      for (let i = 0; i < jobs.length; i++) {
        const j = jobs[i]!;
        if (j.state !== 'running' || this.live.has(j.id)) continue;
        if (processAlive(j.pid, j.pidStart)) continue;
        jobs[i] = { ...interrupted(j), endedAt: new Date().toISOString() };
        found.push(jobs[i]!);
      }
      return found;
    });
  }

  /** Runs `work` as a job and returns its result; the job ends done, failed or cancelled with it. */
  async run<T>(spec: JobSpec, work: (ctl: JobControl) => Promise<T>): Promise<T> {
    const live = this.begin(spec);
    const { rec, controller } = live;
    const ctl: JobControl = {
      id: rec.id,
      signal: controller.signal,
      progress: (done, total) => {
        rec.bytesDone = done;
        if (total !== undefined) rec.bytesTotal = total;
        const now = Date.now();
        if (now - live.lastPersist >= PERSIST_MS) {
          live.lastPersist = now;
          this.persist(rec);
        }
      },
    };
    const onOuter = (): void => controller.abort(spec.signal?.reason);
    spec.signal?.addEventListener('abort', onOuter, { once: true });
    try {
      const result = await work(ctl);
      // A job that ran to its end is done even if a cancel came in at the last moment.
      this.end(rec, 'done');
      return result;
    } catch (err) {
      if (controller.signal.aborted) this.end(rec, 'cancelled', `cancelled${spec.signal?.aborted ? '' : ' by request'}`);
      else this.end(rec, 'failed', err instanceof Error ? err.message : String(err));
      throw err;
    } finally {
      spec.signal?.removeEventListener('abort', onOuter);
      this.live.delete(rec.id);
    }
  }

  /** The pool's jobs, oldest first, the ones running here with their latest progress. */
  list(): JobRecord[] {
    const recorded = this.store.read().map((j) => ({ ...(this.live.get(j.id)?.rec ?? j) }));
    const unrecorded = [...this.live.values()].filter((l) => l.rec.id < 0).map((l) => ({ ...l.rec }));
    return [...recorded, ...unrecorded];
  }

  get(id: number): JobRecord {
    const j = this.list().find((r) => r.id === id);
    if (!j) throw new JobError('ENOENT', `pool '${this.pool}' has no job ${id}`);
    return j;
  }

  /** Asks a job running in this process to stop; resolves with its record as it is now (its end is recorded when the work has stopped). */
  cancel(id: number): JobRecord {
    const live = this.live.get(id);
    if (!live) {
      const j = this.get(id);
      if (j.state !== 'running') throw new JobError('EINVAL', `job ${id} of pool '${this.pool}' is not running (it is ${j.state})`);
      throw new JobError('EBUSY', `job ${id} of pool '${this.pool}' runs in another process (pid ${j.pid}); stop that command, or cancel it through the server that runs it`);
    }
    live.controller.abort(new JobError('EINVAL', `job ${id} was cancelled`));
    return { ...live.rec };
  }

  /** Marks interrupted job `id` as carried on by job `by` (a rebuild or reclaim that resumed). */
  resumed(id: number, by: number): void {
    this.store.update((jobs) => {
      const j = jobs.find((r) => r.id === id);
      if (j) j.resumes = `resumed as job ${by}`;
    });
  }

  private begin(spec: JobSpec): Live {
    const make = (id: number): JobRecord => ({
      id,
      kind: spec.kind,
      pool: this.pool,
      target: spec.target,
      state: 'running',
      bytesDone: 0,
      bytesTotal: spec.total ?? 0,
      ...(spec.rate !== undefined && spec.rate > 0 ? { rate: spec.rate } : {}),
      startedAt: new Date().toISOString(),
      pid: process.pid,
      ...(this.pidStart !== undefined ? { pidStart: this.pidStart } : {}),
      ...(spec.resumes !== undefined ? { resumes: spec.resumes } : {}),
      ...(spec.restart !== undefined ? { restart: spec.restart } : {}),
    });
    let rec: JobRecord;
    try {
      rec = this.store.update((jobs) => {
        const r = make(jobs.reduce((m, j) => Math.max(m, j.id), 0) + 1);
        jobs.push(r);
        return r;
      });
    } catch {
      // A home whose job list cannot be written (read-only, full) must not stop the work: the job is kept in memory only.
      rec = make(--this.unrecorded);
    }
    const live: Live = { rec: { ...rec }, controller: new AbortController(), lastPersist: Date.now() };
    if (spec.signal?.aborted) live.controller.abort(spec.signal.reason);
    this.live.set(rec.id, live);
    return live;
  }

  private end(rec: JobRecord, state: 'done' | 'failed' | 'cancelled', error?: string): void {
    rec.state = state;
    rec.endedAt = new Date().toISOString();
    if (state === 'done' && rec.bytesTotal > 0) rec.bytesDone = rec.bytesTotal;
    if (error !== undefined) rec.error = error;
    this.persist(rec);
  }

  private persist(rec: JobRecord): void {
    if (rec.id < 0) return;
    try {
      this.store.update((jobs) => {
        const i = jobs.findIndex((j) => j.id === rec.id);
        if (i >= 0) jobs[i] = { ...rec };
        else jobs.push({ ...rec });
      });
    } catch {
      // A job list that cannot be written must not fail the work it describes; the next write tries again.
    }
  }
}

const managers = new Map<string, Jobs>();

/** The one Jobs of a pool in this process, so the server's control socket and the work it runs see the same live jobs. */
export function jobsFor(home: string, pool: string): Jobs {
  const key = `${path.resolve(home)}\0${pool}`;
  let j = managers.get(key);
  if (!j) managers.set(key, (j = new Jobs(home, pool)));
  return j;
}
