import { allocatedBytes } from '../blockdev/index.js';
import { Pool, PoolError, type CheckReport, type PoolStats, type Preallocation, type VolumeInfo } from '../qcowlike/index.js';
import type { Jobs } from './jobs.js';
import type { LiveVolumes } from './live-volumes.js';
import { refuseMigrating } from './migration-guard.js';
import { deleteAsJob } from './reclaim-job.js';
import { overcommitWarnings, poolHealth, type PoolHealth } from './pool-health.js';
import { resizePool, type PoolResizeResult } from './pool-resize.js';
import { formatSize } from './size.js';
import { volumeRuns, type MapRun } from './volume-runs.js';
import { requestFlag } from './request-fields.js';
import { parseDiffRequest, runDiff, type DiffRequest } from './diff-admin.js';
import type { DiffExtent } from '../snapshot/index.js';
import { chainSummary, runChain, type ChainSummary } from './chain-admin.js';
import { CHAIN_OPS, CHAIN_READS, isChainRequest, parseChainRequest, type ChainRequest, type ChainResults } from './chain-requests.js';

/**
 * The administrative verbs on one pool, each written once. The CLI runs them
 * in-process on a pool it opened, or sends them over the control socket of
 * the `strata serve` that holds the pool, which runs the same function on its
 * open pool: either way the result is the same value, printed the same way.
 */
export type AdminRequest =
  | { op: 'pool-info' }
  | { op: 'pool-check'; repair: boolean }
  | { op: 'volume-list' }
  | { op: 'volume-info'; volume: string }
  | { op: 'volume-create'; volume: string; size: number; preallocation: Preallocation }
  | { op: 'volume-resize'; volume: string; size: number; grow: boolean; shrink?: boolean; force: boolean }
  | { op: 'volume-delete'; volume: string; force: boolean }
  | { op: 'map'; volume: string }
  | { op: 'pool-resize'; size: number }
  | DiffRequest
  | ChainRequest;

export interface AdminResults extends ChainResults {
  'pool-info': PoolStats & PoolHealth;
  'pool-check': CheckReport;
  'volume-list': VolumeInfo[];
  'volume-info': VolumeInfo & ChainSummary;
  'volume-create': VolumeInfo & { warnings: string[] };
  'volume-resize': { oldSize: number; size: number; warnings: string[] };
  'volume-delete': { deleted: string };
  map: MapRun[];
  'pool-resize': PoolResizeResult;
  diff: DiffExtent[];
}

export type AdminResult<R extends AdminRequest> = AdminResults[R['op']];

/** What the pool's host knows beyond the pool: who uses a volume (a served pool's connections). */
export interface AdminContext {
  /** The pool's registered name, for messages. */
  poolName: string;
  /** Clients connected to a volume now (0 when not served); `VOL@SNAP` or `TMPL` asks about a snapshot's or template's export. */
  clientsOf?(volume: string): number;
  /** Ends the connections using a volume (or `VOL@SNAP`, `TMPL`) of a served pool; resolves once they are gone. */
  disconnect?(volume: string): Promise<number>;
  /** Called after the set of volumes or their sizes changed (a server refreshes what it exports). */
  changed?(): void;
  /** The pool is served: a check must not stop I/O for long and cannot repair under load. */
  online?: boolean;
  /** The pool's jobs: a delete's reclaim is recorded there. */
  jobs?: Jobs;
  /** Cancels the jobs a verb runs (Ctrl-C on a command, a server stopping). */
  signal?: AbortSignal;
  /** A served pool: its server's exports and pools, for work on volumes in use (hot migration). */
  live?: LiveVolumes;
}

/** Errors that name the volume the way the user typed it. */
export class AdminError extends Error {
  constructor(
    readonly code: 'ENOENT' | 'EEXIST' | 'EINVAL' | 'EBUSY',
    message: string,
  ) {
    super(message);
    this.name = 'AdminError';
  }
}

export async function runAdmin<R extends AdminRequest>(pool: Pool, req: R, ctx: AdminContext): Promise<AdminResult<R>> {
  return (await dispatch(pool, req, ctx)) as AdminResult<R>;
}

async function dispatch(pool: Pool, req: AdminRequest, ctx: AdminContext): Promise<AdminResults[AdminRequest['op']]> {
  const about = <T>(volume: string, fn: () => Promise<T>): Promise<T> => aboutVolume(ctx.poolName, volume, fn);
  if (ctx.jobs) refuseMigrating(ctx.jobs, ctx.poolName, req);
  if (isChainRequest(req)) return runChain(pool, req, ctx);
  switch (req.op) {
    case 'pool-info':
      return { ...pool.stats(), ...poolHealth(pool) };
    case 'pool-check':
      if (ctx.online && req.repair) throw new AdminError('EBUSY', `pool '${ctx.poolName}' is served: a repairing check needs the pool stopped (stop strata serve first); a check that only reports runs online`);
      return ctx.online ? pool.checkOnline() : pool.check({ repair: req.repair });
    case 'volume-list':
      return pool.listVolumes();
    case 'volume-info':
      return about(req.volume, async () => {
        const info = await pool.volumeInfo(req.volume);
        return { ...info, ...(await chainSummary(pool, info)) };
      });
    case 'volume-create': {
      if (req.size <= 0) throw new AdminError('EINVAL', 'a volume needs a size above 0');
      const info = await about(req.volume, () => pool.createVolume(req.volume, req.size, { preallocation: req.preallocation }));
      ctx.changed?.();
      return { ...info, warnings: overcommitWarnings(pool, ctx.poolName) };
    }
    case 'volume-resize': {
      const old = (await about(req.volume, () => pool.volumeInfo(req.volume))).size;
      // `+SIZE` and `-SIZE` are relative to the size the pool holds now, not to what the client last saw.
      const size = req.grow ? old + req.size : req.shrink === true ? old - req.size : req.size;
      if (size <= 0) throw new AdminError('EINVAL', 'a volume needs a size above 0');
      if (size < old && !req.force) {
        const beyond = await dataBeyond(pool, req.volume, size);
        if (beyond > 0) throw new AdminError('EINVAL', `cannot shrink ${ctx.poolName}/${req.volume} from ${formatSize(old)} to ${formatSize(size)}: ${formatSize(beyond)} of data lies beyond ${formatSize(size)} (a forced shrink discards it)`);
      }
      await pool.resizeVolume(req.volume, size, { force: req.force });
      ctx.changed?.();
      return { oldSize: old, size, warnings: size > old ? overcommitWarnings(pool, ctx.poolName) : [] };
    }
    case 'volume-delete': {
      // Refused before it becomes a failed job: a volume with snapshots stays.
      const snaps = pool.catalogNow.snapshots.filter((x) => x.volume === req.volume).map((x) => `${req.volume}@${x.name}`);
      if (snaps.length > 0) throw new AdminError('EBUSY', `volume '${ctx.poolName}/${req.volume}' has snapshots (${snaps.join(', ')}); delete them first`);
      const clients = ctx.clientsOf?.(req.volume) ?? 0;
      if (clients > 0 && !req.force) throw new AdminError('EBUSY', `volume '${ctx.poolName}/${req.volume}' has ${clients} connected client${clients === 1 ? '' : 's'}; disconnect ${clients === 1 ? 'it' : 'them'} first, or force the delete to end ${clients === 1 ? 'its connection' : 'their connections'}`);
      // The volume is checked first, so that a force on a missing name ends nobody's connection.
      if (clients > 0) {
        await about(req.volume, () => pool.volumeInfo(req.volume));
        await ctx.disconnect?.(req.volume);
      }
      await about(req.volume, () => deleteAsJob(ctx.jobs, pool, req.volume));
      ctx.changed?.();
      return { deleted: `${ctx.poolName}/${req.volume}` };
    }
    case 'pool-resize':
      return resizePool(pool, ctx.poolName, req.size);
    case 'diff':
      return runDiff(pool, ctx.poolName, req);
    case 'map': {
      const volume = await about(req.volume, () => pool.openVolume(req.volume, { readOnly: true }));
      try {
        const all: MapRun[] = [];
        for await (const run of volumeRuns(volume)) all.push(run);
        return all;
      } finally {
        await volume.close();
      }
    }
  }
}

/** Bytes the volume holds (allocated, data or zero) past `size`: what a shrink to `size` would throw away. */
async function dataBeyond(pool: Pool, volume: string, size: number): Promise<number> {
  const vol = await pool.openVolume(volume, { readOnly: true });
  try {
    return await allocatedBytes(vol, size);
  } finally {
    await vol.close();
  }
}

/** Runs a pool call about one volume, and says "missing" or "already there" the way the user named it. */
export async function aboutVolume<T>(poolName: string, volume: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof PoolError && err.code === 'ENOENT') throw new AdminError('ENOENT', `volume '${volume}' not found in pool '${poolName}'`);
    if (err instanceof PoolError && err.code === 'EEXIST') throw new AdminError('EEXIST', `volume '${poolName}/${volume}' already exists`);
    throw err;
  }
}

const PREALLOCATIONS: readonly Preallocation[] = ['off', 'metadata', 'full'];
const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks a request that came over the control socket, field by field; the error names what is wrong. */
export function parseAdminRequest(raw: Record<string, unknown>): AdminRequest {
  const volume = (): string => {
    const v = raw.volume;
    if (typeof v !== 'string' || !VOLUME_NAME.test(v)) throw new Error(`'${String(raw.op)}' needs 'volume' (a volume name)`);
    return v;
  };
  const bytes = (key: string): number => {
    const v = raw[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`'${key}' must be a whole number of bytes`);
    return v;
  };
  const flag = (key: string): boolean => requestFlag(raw, key);
  switch (raw.op) {
    case 'pool-info':
    case 'volume-list':
      return { op: raw.op };
    case 'pool-check':
      return { op: 'pool-check', repair: flag('repair') };
    case 'volume-info':
    case 'map':
      return { op: raw.op, volume: volume() };
    case 'volume-delete':
      return { op: 'volume-delete', volume: volume(), force: flag('force') };
    case 'volume-create': {
      const p = raw.preallocation ?? 'off';
      if (typeof p !== 'string' || !PREALLOCATIONS.includes(p as Preallocation)) throw new Error(`'preallocation' must be one of ${PREALLOCATIONS.join(', ')}`);
      return { op: 'volume-create', volume: volume(), size: bytes('size'), preallocation: p as Preallocation };
    }
    case 'pool-resize':
      return { op: 'pool-resize', size: bytes('size') };
    case 'diff':
      return parseDiffRequest(raw, volume());
    case 'volume-resize': {
      const grow = flag('grow');
      const shrink = flag('shrink');
      if (grow && shrink) throw new Error("'volume-resize' takes 'grow' or 'shrink', not both");
      return { op: 'volume-resize', volume: volume(), size: bytes('size'), grow, ...(shrink ? { shrink } : {}), force: flag('force') };
    }
    default:
      if (typeof raw.op === 'string' && CHAIN_OPS.has(raw.op)) return parseChainRequest(raw);
      throw new Error(`unknown request '${String(raw.op)}'`);
  }
}

export const ADMIN_OPS: ReadonlySet<string> = new Set(['pool-info', 'pool-check', 'volume-list', 'volume-info', 'volume-create', 'volume-resize', 'volume-delete', 'map', 'pool-resize', 'diff', ...CHAIN_OPS]);

/** The verbs that only read: allowed on a pool served read-only. */
export function adminReads(req: AdminRequest): boolean {
  return req.op === 'pool-info' || req.op === 'pool-check' || req.op === 'volume-list' || req.op === 'volume-info' || req.op === 'map' || req.op === 'diff' || CHAIN_READS.has(req.op);
}
