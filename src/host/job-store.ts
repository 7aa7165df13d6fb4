import fs from 'node:fs';
import path from 'node:path';
import { waitForLockSync } from 'fs-native-extensions';
import { TERMINAL_STATES, type JobRecord } from './job-record.js';
import { processAlive } from './process-liveness.js';
import { writeJsonDurably } from './durable-json.js';

/** Finished jobs kept per pool; older ones are dropped as new ones end. */
const KEEP_FINISHED = 100;
const POOL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * The jobs of one pool, in HOME/jobs/POOL.json: in the home rather than in
 * the pool, so they can be listed while a server holds the pool locked, and
 * a job whose process died is still there to be reported. Every change
 * rewrites the whole file (temp file, fsync, rename, fsync of the folder),
 * so a crash leaves the old list or the new one, never a torn one.
 */
export class JobStore {
  readonly file: string;

  constructor(home: string, pool: string) {
    if (!POOL_NAME.test(pool)) throw new Error(`'${pool}' is not a pool name`);
    this.file = path.join(path.resolve(home), 'jobs', `${pool}.json`);
  }

  /** The recorded jobs, oldest first; a running job whose process is gone reads as interrupted. */
  read(): JobRecord[] {
    return this.load().map((j) => (j.state === 'running' && !processAlive(j.pid, j.pidStart) ? interrupted(j) : j));
  }

  /** Applies `change` to the list as it is on disk now and writes it back; all synchronous, so changes from one process never interleave. */
  update<T>(change: (jobs: JobRecord[]) => T): T {
    const unlock = this.lock();
    try {
      return this.change(change);
    } finally {
      unlock();
    }
  }

  /**
   * Holds the pool's job-list lock (HOME/jobs/POOL.lock, an exclusive file
   * lock) so that two processes (a server and a command beside it) never
   * read the same list and write back different changes. A home where the
   * lock file cannot be made goes on unlocked: the write that follows meets
   * the same problem and is handled as a failed write.
   */
  private lock(): () => void {
    let fd: number;
    try {
      fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
      fd = fs.openSync(`${this.file.slice(0, -'.json'.length)}.lock`, 'a', 0o600);
    } catch {
      return () => undefined;
    }
    try {
      waitForLockSync(fd);
    } catch {
      fs.closeSync(fd);
      return () => undefined;
    }
    // Closing the descriptor releases the lock.
    return () => fs.closeSync(fd);
  }

  private change<T>(change: (jobs: JobRecord[]) => T): T {
    const jobs = this.load();
    const before = JSON.stringify(jobs);
    const result = change(jobs);
    const after = prune(jobs);
    // A change that changed nothing writes nothing: an open on a full home must not fail for want of room to rewrite the same list.
    if (JSON.stringify(after) !== before) this.write(after);
    return result;
  }

  private load(): JobRecord[] {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new Error(`cannot read the job list ${this.file}: ${(err as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new Error(`the job list ${this.file} is not JSON`);
    }
    if (typeof parsed !== 'object' || parsed === null || !Array.isArray((parsed as { jobs?: unknown }).jobs)) throw new Error(`the job list ${this.file} has no 'jobs' array`);
    return (parsed as { jobs: JobRecord[] }).jobs;
  }

  private write(jobs: JobRecord[]): void {
    writeJsonDurably(this.file, { jobs });
  }
}

/** The state a running job takes once its process is known to be gone. */
export function interrupted(j: JobRecord): JobRecord {
  return { ...j, state: 'interrupted', error: j.error ?? `its process (pid ${j.pid}) ended before the job did` };
}

function prune(jobs: JobRecord[]): JobRecord[] {
  const finished = jobs.filter((j) => TERMINAL_STATES.has(j.state));
  if (finished.length <= KEEP_FINISHED) return jobs;
  const drop = new Set(finished.slice(0, finished.length - KEEP_FINISHED));
  const kept = jobs.filter((j) => !drop.has(j));
  jobs.splice(0, jobs.length, ...kept);
  return jobs;
}
