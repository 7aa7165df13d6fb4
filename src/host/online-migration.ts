import type { BlockDevice } from '../blockdev/index.js';
import { PoolError, type Pool } from '../qcowlike/index.js';
import { MirrorDevice, type CopyRange } from '../migrate/mirror-device.js';
import { AdminError, type AdminContext } from './admin.js';
import type { JobControl } from './jobs.js';
import type { HeldVolume, LiveVolumes } from './live-volumes.js';
import { MigrationRecords, type MigrationRecord } from './migration-records.js';
import { oneLine } from './pool-errors.js';
import { volumeRuns, type Mappable } from './volume-runs.js';
import { copyChain } from '../migrate/chain-pipe.js';
import { dropSnapshot, sourceState, takeTemporary, temporaryName } from '../migrate/chain-ops.js';
import type { ReceiveResult } from '../migrate/receive.js';
import { deleteTemplate, diffRanges } from '../snapshot/index.js';
import { dropTarget } from './migration-recovery.js';

export interface OnlineMigrationRequest {
  op: 'migrate-online';
  volume: string;
  targetPool: string;
  targetVolume: string;
  /** Bytes per second of background copy; mirrored guest writes are never held back. */
  rate?: number;
}

export interface OnlineMigrationResult {
  source: string;
  target: string;
  size: number;
  /** Bytes the background copy read and wrote (guest writes mirrored meanwhile not counted). */
  copiedBytes: number;
  /** How long requests were held at the pivot. */
  pivotHeldMs: number;
  seconds: number;
  /** Left for the next open of the source pool to remove (something still had it open). */
  sourceLeft?: string;
}

/** The pieces of a hot migration that tests drive without a server: the pools and the export's device. */
export interface MigrationEnds {
  home: string;
  source: { name: string; pool: Pool };
  target: { name: string; pool: Pool };
  held: Pick<HeldVolume, 'device' | 'exportName'>;
}

/**
 * Moves a served volume to another pool while its clients go on: the copy
 * is made under a write-blocking mirror, then the export is moved onto it in
 * one step with requests held (the pivot), and the source is freed. The
 * target's completion is the pivot's commit point; the home's record of the
 * migration lets the next open of either pool finish or undo it.
 */
export async function migrateOnline(pool: Pool, req: OnlineMigrationRequest, ctx: AdminContext & { home: string }): Promise<OnlineMigrationResult> {
  const live = ctx.live;
  if (!live) throw new AdminError('EINVAL', `pool '${ctx.poolName}' is not served here: a migration without --online moves it`);
  const v = pool.volumeRecords().find((x) => x.name === req.volume);
  if (!v) throw new AdminError('ENOENT', `volume '${req.volume}' not found in pool '${ctx.poolName}'`);
  if (v.incomplete) throw new AdminError('EINVAL', `volume '${ctx.poolName}/${req.volume}' is incomplete (its import did not finish): there is nothing whole to move`);
  if (req.targetPool === ctx.poolName) throw new AdminError('EINVAL', `'${ctx.poolName}/${req.volume}' is in pool '${req.targetPool}' already; a migration moves a volume to another pool`);
  await refuseDependants(pool, ctx.poolName, req.volume);
  const records = new MigrationRecords(ctx.home);
  const busy = records.busy(ctx.poolName, req.volume);
  if (busy) throw new AdminError('EBUSY', `volume '${ctx.poolName}/${req.volume}' is being migrated already (to ${busy.target.pool}/${busy.target.volume})`);
  let target: Pool;
  try {
    target = await live.adopt(req.targetPool);
  } catch (err) {
    throw new AdminError('EBUSY', `cannot open pool '${req.targetPool}' for the migration: ${oneLine(err)} (a hot migration runs in the server of the source pool, which must be able to open the target pool: stop the server that holds it, or serve both pools from one server)`);
  }
  if (target.volumeRecords().some((x) => x.name === req.targetVolume) || target.catalogNow.templates.some((t) => t.name === req.targetVolume)) throw new AdminError('EEXIST', `pool '${req.targetPool}' has '${req.targetVolume}' already`);
  const work = async (job?: JobControl): Promise<OnlineMigrationResult> => {
    const held = await live.acquire(ctx.poolName, req.volume);
    try {
      return await runMigration({ home: ctx.home, source: { name: ctx.poolName, pool }, target: { name: req.targetPool, pool: target }, held }, req, live, job);
    } finally {
      await held.release();
    }
  };
  const spec = { kind: 'migrate' as const, target: `${ctx.poolName}/${req.volume} to ${req.targetPool}/${req.targetVolume} (online)`, resumes: 'rolled back (or finished, after the pivot) at the next open of the pools', ...(req.rate !== undefined ? { rate: req.rate } : {}), ...(ctx.signal ? { signal: ctx.signal } : {}) };
  const result = ctx.jobs ? await ctx.jobs.run(spec, work) : await work();
  ctx.changed?.();
  return result;
}

/**
 * The migration proper, on a held export: target made (incomplete), mirror
 * put in, everything copied, pivot, source freed. Anything that stops it
 * before the pivot's commit takes the mirror away and the target with it.
 */
export async function runMigration(ends: MigrationEnds, req: Omit<OnlineMigrationRequest, 'op'>, live: Pick<LiveVolumes, 'alias'> | undefined, job?: JobControl, hooks: { beforePivot?: () => Promise<void> } = {}): Promise<OnlineMigrationResult> {
  const started = performance.now();
  const { source, target, held } = ends;
  const records = new MigrationRecords(ends.home);
  const movable = held.device;
  const volume = movable.volume as BlockDevice & Mappable;
  if (movable.interposed) throw new AdminError('EBUSY', `volume '${source.name}/${req.volume}' is being mirrored already (a push to an NBD export runs on it); cancel that job first`);
  const rec = records.create({ pool: source.name, volume: req.volume }, { pool: target.name, volume: req.targetVolume });
  let tgt: BlockDevice | undefined;
  let mirror: MirrorDevice | undefined;
  let temporary: string | undefined;
  let chain: ReceiveResult | undefined;
  let pivoted = false;
  try {
    // Hidden from clients while it fills, and after the pivot the same export as the old name.
    live?.alias(held.exportName, { pool: target.name, volume: req.targetVolume, active: false });
    const copyOpts = { ...(req.rate !== undefined ? { rate: req.rate } : {}), ...(job ? { signal: job.signal } : {}) };
    // A volume with a history (snapshots, or an origin it was cloned from) sends it first, frozen at a temporary snapshot, as a cold migration does; the mirror then covers what changed since.
    if (hasHistory(source.pool, req.volume)) {
      // Named in the record before it is taken: a crash just after the snapshot landed must still find it to drop.
      temporary = temporaryName();
      records.setTemporary(rec, temporary);
      await takeTemporary(source.pool, req.volume, temporary);
      records.setTargetMade(rec);
      chain = await copyChain({ pool: source.pool, poolName: source.name, home: ends.home }, { pool: target.pool, poolName: target.name, home: ends.home }, { volume: req.volume, to: temporary, newName: req.targetVolume }, { ...copyOpts, ...(job ? { onProgress: (d: number, t: number) => job.progress(d, t) } : {}) });
      await target.pool.markIncomplete(req.targetVolume);
    } else {
      await target.pool.createVolume(req.targetVolume, volume.size, { incomplete: true });
      records.setTargetMade(rec);
    }
    tgt = await target.pool.openVolume(req.targetVolume);
    const into = tgt;
    // Put in with requests held: a write already on its way to the source alone could otherwise land behind the copy of its range.
    const resume = await movable.hold();
    mirror = movable.interpose((vol) => new MirrorDevice(vol, into, { targetZeroed: temporary === undefined }));
    resume();
    const ranges = temporary === undefined ? dataRanges(volume) : changedSince(source.pool, req.volume, temporary);
    const total = temporary === undefined ? await dataBytes(volume) : await rangeBytes(changedSince(source.pool, req.volume, temporary));
    job?.progress(0, total);
    const copiedBytes = await mirror.copy(ranges, total, { ...copyOpts, ...(job ? { onProgress: (d: number) => job.progress(d, total) } : {}) });
    await hooks.beforePivot?.();
    // Most of the target made durable while clients go on: the flush under the hold has only what came since.
    await into.flush();
    const pivotStart = performance.now();
    const release = await movable.hold();
    let pivotHeldMs: number;
    try {
      if (mirror.failed) throw mirror.failed;
      job?.signal.throwIfAborted();
      await into.flush();
      records.setPhase(rec, 'pivot');
      await target.pool.completeVolume(req.targetVolume);
      pivoted = true;
      movable.moveTo(into);
      live?.alias(held.exportName, { pool: target.name, volume: req.targetVolume, active: true });
    } finally {
      release();
      pivotHeldMs = performance.now() - pivotStart;
    }
    // The volume is the target's now, whatever follows: what cannot be done here is left for the next open of the source pool.
    let sourceLeft: string | undefined;
    try {
      records.setPhase(rec, 'pivoted');
      await volume.close();
      sourceLeft = await removeSource(source.pool, req.volume);
      if (sourceLeft === undefined) records.remove(rec);
    } catch (err) {
      sourceLeft = oneLine(err);
    }
    return { source: `${source.name}/${req.volume}`, target: `${target.name}/${req.targetVolume}`, size: volume.size, copiedBytes, pivotHeldMs: Math.round(pivotHeldMs * 10) / 10, seconds: Math.round((performance.now() - started) / 100) / 10, ...(sourceLeft !== undefined ? { sourceLeft } : {}) };
  } catch (err) {
    if (pivoted) throw err;
    await rollBack(ends, req.targetVolume, rec, records, tgt, mirror !== undefined, temporary, chain, isTaken(err));
    live?.alias(held.exportName, undefined);
    throw err;
  }
}

/**
 * Undoes a migration stopped before its pivot: the mirror out (requests
 * held meanwhile), the target gone (with the template its receive made,
 * unless something else uses it now), the temporary snapshot dropped, the
 * record with them.
 */
async function rollBack(ends: MigrationEnds, targetVolume: string, rec: MigrationRecord, records: MigrationRecords, tgt: BlockDevice | undefined, interposed: boolean, temporary: string | undefined, chain: ReceiveResult | undefined, targetTaken: boolean): Promise<void> {
  const movable = ends.held.device;
  if (interposed) {
    const release = await movable.hold();
    movable.restore();
    release();
  }
  try {
    records.setPhase(rec, 'aborted');
    await tgt?.close();
    // A volume of that name that the migration did not make (one created meanwhile, which its createVolume refused) stays.
    const ours = rec.targetMade || ends.target.pool.volumeRecords().some((v) => v.name === targetVolume && v.incomplete);
    if (ours && !targetTaken) await dropTarget(ends.target.pool, ends.home, ends.target.name, targetVolume);
    if (chain?.origin && !chain.origin.reused) await deleteTemplate(ends.target.pool, chain.origin.template).catch(() => undefined);
    if (temporary !== undefined && ends.source.pool.catalogNow.snapshots.some((x) => x.volume === rec.source.volume && x.name === temporary)) await dropSnapshot(ends.source.pool, rec.source.volume, temporary);
    records.remove(rec);
  } catch {
    // The record says aborted: the next open of each pool removes what is left.
  }
}

/** The target name was taken meanwhile by someone else's volume (the make refused it). */
function isTaken(err: unknown): boolean {
  return (err instanceof AdminError || err instanceof PoolError) && err.code === 'EEXIST';
}

/** Whether the volume has a history to carry: snapshots, or an origin it is a linked clone of. */
function hasHistory(pool: Pool, volume: string): boolean {
  const c = pool.catalogNow;
  if (c.snapshots.some((s) => s.volume === volume)) return true;
  const layer = c.layers.find((l) => l.id === c.volumes.find((v) => v.name === volume)?.layer);
  return layer !== undefined && layer.parent !== null;
}

/** What changed in the volume since its temporary snapshot, as the copy brings it over onto a target that reads as that snapshot. */
async function* changedSince(pool: Pool, volume: string, snapshot: string): AsyncGenerator<CopyRange> {
  for await (const e of diffRanges(pool, volume, snapshot, null)) yield { offset: e.offset, length: e.length, kind: e.kind === 'zero' ? 'zero' : 'data' };
}

/**
 * The source goes once nothing has it open (a `map` or a snapshot's reader
 * may still, for a moment); undefined when it went, else why it is left
 * for the next open of its pool to remove.
 */
async function removeSource(pool: Pool, volume: string): Promise<string | undefined> {
  for (let attempt = 0; ; attempt++) {
    try {
      await pool.deleteVolumeChain(volume);
      return undefined;
    } catch (err) {
      if (attempt >= 50 || !(err instanceof PoolError && err.code === 'EBUSY')) return oneLine(err);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The source goes whole after the pivot: not while clones of its snapshots stay in its pool. */
async function refuseDependants(pool: Pool, poolName: string, volume: string): Promise<void> {
  const { clones } = await sourceState(pool, volume);
  if (clones.length > 0) throw new AdminError('EBUSY', `${poolName}/${volume} cannot leave pool '${poolName}': ${clones.join(', ')} ${clones.length === 1 ? 'is a clone' : 'are clones'} of its snapshots there (migrate or flatten ${clones.length === 1 ? 'it' : 'them'} first)`);
}

async function dataBytes(volume: Mappable): Promise<number> {
  return rangeBytes(dataRanges(volume));
}

async function rangeBytes(ranges: AsyncIterable<CopyRange>): Promise<number> {
  let n = 0;
  for await (const r of ranges) n += r.length;
  return n;
}

/** What the copy must bring over to a fresh thin volume: data runs only (holes and zero runs read as zeroes there already). */
async function* dataRanges(volume: Mappable): AsyncGenerator<CopyRange> {
  for await (const r of volumeRuns(volume)) if (r.type === 'data') yield { offset: r.offset, length: r.length, kind: 'data' };
}
