import fs from 'node:fs';
import path from 'node:path';
import type { FileDevice } from '../blockdev/index.js';
import type { ArrayStatus, RaidArray, ScrubReport } from '../raid/index.js';
import { repairPendingNow } from './pending-store.js';
import { newMember } from './raid-members.js';
import { requestFlag } from './request-fields.js';
import type { Jobs } from './jobs.js';
import { rebuildJob } from './rebuild-job.js';
import { scrubJob } from './scrub-job.js';

/**
 * The RAID verbs on one open array, each written once. `strata raid` runs
 * them in-process on an array it assembled when no server holds the pool, and
 * the control server runs the same function on the array it serves: the
 * result, and so what the command prints, is the same either way. Member
 * files are absolute paths (or role numbers) once they reach here.
 */
export type RaidRequest =
  | { op: 'status' }
  /** `wait`: rebuild the spare that takes over before answering (the default in-process; a server rebuilds in the background). */
  | { op: 'fail'; member: string; rate?: number; wait?: boolean }
  | { op: 'remove'; member: string }
  | { op: 'add'; file: string; rate?: number; wait?: boolean }
  | { op: 'replace'; member: string; file: string; rate?: number; wait?: boolean }
  /** Starts (or resumes, or joins) the rebuild of every role waiting for one; answers once the array is whole. */
  | { op: 'rebuild'; rate?: number }
  | { op: 'scrub'; repair?: boolean };

export const RAID_OPS: ReadonlySet<string> = new Set(['status', 'fail', 'remove', 'add', 'replace', 'rebuild', 'scrub']);

export interface RaidResult {
  /** The array after the verb. */
  status: ArrayStatus;
  /** The array's events while the verb ran (a spare taking over, a rebuild ending), for the command to show. */
  messages: string[];
  /** add and replace: the role the new member took. */
  role?: number | 'spare';
  /** rebuild: whether there was anything to rebuild. */
  rebuilding?: boolean;
  report?: ScrubReport;
}

export interface RaidProgress {
  progress: number;
  bytes: number;
}

export interface RaidContext {
  /** Where pending repairs are stored (the home directory). */
  home: string;
  /** Rebuild rate for requests that give none (bytes/s, 0 = unlimited). */
  rebuildRate: number;
  /** New members are opened with O_DIRECT, like the array's others. */
  direct: boolean;
  /**
   * Runs a change to the member set so that a rebuild it starts in the
   * background goes at `rate` (a served array); in-process, just runs it.
   */
  rebuildsAt<T>(rate: number, fn: () => Promise<T>): Promise<T>;
  /** The pool's jobs: a rebuild or scrub runs as one of them; absent for an array named by its members. */
  jobs?: Jobs;
  /** Records the member set a change left (the registry entry of a pool); absent for an array named by its members. */
  record?(array: RaidArray): void;
  progress?(p: RaidProgress): void;
  /** Collects what the array says while the verb runs; returns the function that stops listening. */
  listen?(listener: (message: string) => void): () => void;
}

const PROGRESS_MS = 250;

/** Whether the verb changes the array (refused on an array served read-only). */
export function raidWrites(req: RaidRequest): boolean {
  return !(req.op === 'status' || (req.op === 'scrub' && req.repair !== true));
}

/** Checks a request's fields one by one (it came over the control socket); the error names what is wrong. */
export function parseRaidRequest(r: Record<string, unknown>): RaidRequest {
  const str = (key: string): string => {
    const v = r[key];
    if (typeof v !== 'string' || v === '') throw new Error(`'${String(r.op)}' needs '${key}' (a string)`);
    return v;
  };
  const file = (key: string): string => {
    const v = str(key);
    if (!path.isAbsolute(v)) throw new Error(`'${key}' must be an absolute path, got '${v}'`);
    return path.normalize(v);
  };
  const member = (): string => {
    const v = str('member');
    return /^\d+$/.test(v) ? v : file('member');
  };
  const rate = (): { rate?: number } => {
    if (r.rate === undefined) return {};
    if (typeof r.rate !== 'number' || !Number.isSafeInteger(r.rate) || r.rate < 0) throw new Error(`'rate' must be a whole number of bytes per second, got ${JSON.stringify(r.rate)}`);
    return { rate: r.rate };
  };
  const flag = (key: string): boolean => requestFlag(r, key);
  switch (r.op) {
    case 'status':
      return { op: 'status' };
    case 'fail':
      return { op: 'fail', member: member(), ...rate(), wait: flag('wait') };
    case 'remove':
      return { op: 'remove', member: member() };
    case 'add':
      return { op: 'add', file: file('file'), ...rate(), wait: flag('wait') };
    case 'replace':
      return { op: 'replace', member: member(), file: file('file'), ...rate(), wait: flag('wait') };
    case 'rebuild':
      return { op: 'rebuild', ...rate() };
    case 'scrub':
      return { op: 'scrub', repair: flag('repair') };
    default:
      throw new Error(`unknown RAID request '${String(r.op)}'`);
  }
}

export async function runRaid(array: RaidArray, req: RaidRequest, ctx: RaidContext): Promise<RaidResult> {
  const messages: string[] = [];
  const unlisten = ctx.listen?.((m) => messages.push(m));
  try {
    const out = await dispatch(array, req, ctx, (m) => messages.push(m));
    return { status: array.status(), messages, ...out };
  } finally {
    unlisten?.();
  }
}

async function dispatch(a: RaidArray, req: RaidRequest, ctx: RaidContext, say: (m: string) => void): Promise<Omit<RaidResult, 'status' | 'messages'>> {
  const rate = 'rate' in req && req.rate !== undefined ? req.rate : ctx.rebuildRate;
  const changed = async <T>(fn: () => Promise<T>, wait = false): Promise<T> => {
    const out = await ctx.rebuildsAt(rate, fn);
    ctx.record?.(a);
    if (wait) await rebuild(a, rate, ctx);
    return out;
  };
  switch (req.op) {
    case 'status':
      return {};
    case 'fail':
      await changed(() => a.fail(req.member), req.wait);
      return {};
    case 'remove':
      await changed(() => a.remove(req.member));
      return {};
    case 'add':
      return { role: await changed(() => withNewMember(a, req.file, ctx.direct, (dev) => a.add(dev)), req.wait) };
    case 'replace':
      return { role: await changed(() => withNewMember(a, req.file, ctx.direct, (dev) => a.replace(req.member, dev)), req.wait) };
    case 'rebuild':
      return { rebuilding: await rebuild(a, rate, ctx) };
    case 'scrub': {
      // Repairs a read-only open left pending name the bad member: fix them from the others before parity is trusted.
      if (req.repair) await repairPendingNow(ctx.home, a, say);
      let last = 0;
      const onProgress = (f: number): void => {
        if (Date.now() - last < PROGRESS_MS && f < 1) return;
        last = Date.now();
        ctx.progress?.({ progress: f, bytes: Math.round(f * a.size) });
      };
      const repair = req.repair ?? false;
      const report = await (ctx.jobs ? scrubJob(ctx.jobs, a, repair, onProgress) : a.scrub({ repair, onProgress }));
      return { report };
    }
  }
}

/**
 * Rebuilds every role waiting for it, or joins the rebuild already running
 * (started by add, replace or a spare, at its own rate), with progress from
 * the array's status; whether there was anything to rebuild.
 */
async function rebuild(a: RaidArray, rate: number, ctx: RaidContext): Promise<boolean> {
  const rebuilding = a.needsRebuild() || a.status().state === 'rebuilding';
  if (!rebuilding) return false;
  const report = (): void => {
    const p = a.status().rebuild;
    if (p) ctx.progress?.({ progress: p.fraction, bytes: p.bytesDone });
  };
  const done = ctx.jobs ? rebuildJob(ctx.jobs, a, rate) : a.rebuild({ rate });
  const timer = setInterval(report, PROGRESS_MS);
  try {
    await done;
  } finally {
    clearInterval(timer);
  }
  if (a.status().state !== 'rebuilding') ctx.progress?.({ progress: 1, bytes: a.geometry.rows * a.geometry.chunk });
  return true;
}

/** Opens (or creates) a new member for `fn`; if `fn` refuses it, the device is closed and a file made here removed. */
async function withNewMember<T>(like: RaidArray, file: string, direct: boolean, fn: (dev: FileDevice) => Promise<T>): Promise<T> {
  const existed = fs.existsSync(file);
  const dev = newMember(file, like, direct);
  try {
    return await fn(dev);
  } catch (err) {
    await dev.close().catch(() => undefined);
    if (!existed) fs.rmSync(file, { force: true });
    throw err;
  }
}
