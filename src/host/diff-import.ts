import { allocatedBytes } from '../blockdev/index.js';
import { loadXxhash } from '../blockdev/xxhash.js';
import { PoolError, type Pool, type Volume } from '../qcowlike/index.js';
import { createSnapshots, diffRanges, type SnapshotInfo } from '../snapshot/index.js';
import { DiffStreamReader } from '../snapshot/diff-stream-reader.js';
import type { DiffHeader, DiffPoint, DiffTotals } from '../snapshot/diff-stream.js';
import { AdminError } from './admin.js';
import { DiffImports, type PendingImport } from './diff-imports.js';
import { snapshotsOf } from './diff-points.js';
import { formatSize } from './size.js';

export interface ImportDiffContext {
  poolName: string;
  home: string;
  /** Clients connected to a volume now (a served pool). */
  clientsOf?(volume: string): number;
  /** The set of volumes changed (a server refreshes its exports). */
  changed?(): void;
  /** Bytes of records applied between two checkpoints in the note (default 256 MiB; tests make it small). */
  checkpointBytes?: number;
}

export interface ImportDiffResult extends DiffTotals {
  volume: string;
  from: DiffPoint | null;
  to: DiffPoint;
  /** The snapshot made here for TO (its own UUID; the mapping to TO's is recorded). */
  snapshot: { name: string; uuid: string };
  size: number;
  createdVolume: boolean;
  /** An interrupted import of the same stream was found and finished. */
  resumed: boolean;
  /** Bytes of the volume below which a resumed import only checked the records, written before its cut. */
  skippedThrough: number;
  streamBytes: number;
}

/**
 * Applies a diff stream to a volume, then makes the TO snapshot on it.
 *
 * The volume must stand at the stream's base: it has a snapshot that is
 * FROM (the same UUID, or one recorded as imported from it) and no write
 * since (diffRanges from it to now is empty); a full stream needs a new or
 * empty volume. The import writes only into the volume and makes the
 * snapshot last, and notes the stream in the home while it runs, so that a
 * cut-short import (a truncated stream, Ctrl-C, a crash) leaves "FROM plus
 * part of the stream", which a re-run of the same stream is allowed over and
 * finishes; any other stream is refused until then.
 */
export async function importDiff(pool: Pool, ctx: ImportDiffContext, volume: string, source: AsyncIterable<Uint8Array>, signal?: AbortSignal, onProgress?: (done: number, total: number) => void): Promise<ImportDiffResult> {
  await loadXxhash();
  const ref = `${ctx.poolName}/${volume}`;
  const reader = new DiffStreamReader(source);
  const header = await reader.header();
  const clients = ctx.clientsOf?.(volume) ?? 0;
  if (clients > 0) throw new AdminError('EBUSY', `volume ${ref} has ${clients} connected client${clients === 1 ? '' : 's'}: import-diff needs it unused (its writes and the stream's would mix)`);
  const note = new DiffImports(ctx.home, ctx.poolName);
  const plan = await planImport(pool, ctx, note, volume, header);
  const pending: PendingImport = plan.pending ? { ...plan.pending } : { from: header.from, to: header.to, size: header.size, phase: 'applying', createdVolume: false, startedAt: new Date().toISOString() };
  if (!plan.pending) {
    if (plan.create) {
      // Marked incomplete until the end, so that a cut-short full import never passes for a good volume.
      note.setPending(volume, { ...pending, createdVolume: true });
      pending.createdVolume = true;
      await pool.createVolume(volume, header.size, { incomplete: true });
      ctx.changed?.();
    } else note.setPending(volume, pending);
  }
  const info = await pool.volumeInfo(volume);
  if (info.size !== header.size) {
    // The source volume was resized between FROM and TO.
    await pool.resizeVolume(volume, header.size, { force: true });
    ctx.changed?.();
  }
  // Over an import that had written everything and was making the snapshot, the data is there already: only the stream is checked.
  const writes = !plan.snapshotDone;
  // What a cut-short run of this stream wrote and flushed is read and checked again, not written again.
  const skipBelow = plan.pending?.appliedThrough ?? 0;
  const vol = await pool.openVolume(volume);
  try {
    const checkpoint = async (through: number): Promise<void> => {
      await vol.flush();
      pending.appliedThrough = through;
      note.setPending(volume, pending);
    };
    await applyRecords(reader, writes ? vol : null, { skipBelow, every: ctx.checkpointBytes ?? CHECKPOINT_BYTES, checkpoint }, signal, (done) => onProgress?.(done, header.size));
    await vol.flush();
  } finally {
    await vol.close();
  }
  note.setPending(volume, { ...pending, phase: 'snapshotting' });
  if (pending.createdVolume) await pool.completeVolume(volume);
  const made = plan.snapshotDone ?? (await createSnapshots(pool, [{ volume, snapshot: header.to.name }]))[0]!;
  note.finish(volume, { volume, snapshot: made.name, uuid: made.uuid, source: header.to.uuid });
  ctx.changed?.();
  return {
    volume,
    from: header.from,
    to: header.to,
    snapshot: { name: made.name, uuid: made.uuid },
    size: header.size,
    createdVolume: pending.createdVolume,
    resumed: plan.pending !== undefined,
    skippedThrough: writes ? skipBelow : header.size,
    streamBytes: reader.position,
    ...reader.totals(),
  };
}

interface Plan {
  /** The interrupted import of this very stream, which this one finishes. */
  pending?: PendingImport;
  /** A full stream into a volume that does not exist: create it. */
  create?: boolean;
  /** The interrupted import had made the TO snapshot already. */
  snapshotDone?: SnapshotInfo;
}

/** Decides whether the stream applies to the volume as it stands, and how; refuses with the reason when it does not. */
async function planImport(pool: Pool, ctx: ImportDiffContext, note: DiffImports, volume: string, h: DiffHeader): Promise<Plan> {
  const ref = `${ctx.poolName}/${volume}`;
  const exists = await volumeExists(pool, volume);
  let pending = note.pending(volume);
  if (pending && !exists) {
    // The volume a cut-short full import made was deleted since: nothing of that import is left.
    note.dropPending(volume);
    pending = undefined;
  }
  if (pending && !sameStream(pending, h)) {
    if (!(await pendingLeftNothing(pool, ctx, note, volume, pending))) throw new AdminError('EBUSY', `an import-diff into ${ref} of ${streamName(pending)} was cut short: run it again with that stream to finish it${pending.from ? `, or go back with strata snapshot revert ${ref}@${pending.from.name}` : ', or delete the volume'}`);
    note.dropPending(volume);
    pending = undefined;
  }
  if (pending) {
    const snaps = await snapshotsOf(pool, ctx.poolName, volume);
    const to = snaps.find((s) => s.name === h.to.name);
    if (to && pending.phase === 'snapshotting' && (await unchangedSince(pool, volume, to.name))) return { pending, snapshotDone: to };
    if (to) throw new AdminError('EEXIST', `${ref} already has a snapshot named '${h.to.name}' (made after the cut-short import of this stream): delete or rename it, then run the import again`);
    return { pending };
  }
  if (exists) {
    const already = await findBase(note, await snapshotsOf(pool, ctx.poolName, volume), h.to);
    if (already) throw new AdminError('EEXIST', `${ref} holds this stream's end point already, as @${already.name}: nothing to apply`);
  }
  if (h.from === null) {
    if (!exists) return { create: true };
    const snaps = await snapshotsOf(pool, ctx.poolName, volume);
    if (snaps.length > 0 || (await holdsData(pool, volume))) throw new AdminError('EEXIST', `${ref} exists and is not empty: a full stream (no base) applies to a new volume; import it under a new name, or delete ${ref} first`);
    return {};
  }
  if (!exists) throw new AdminError('ENOENT', `volume '${volume}' not found in pool '${ctx.poolName}': an incremental stream (from @${h.from.name}) applies to a volume holding its base; import the full stream first`);
  const snaps = await snapshotsOf(pool, ctx.poolName, volume);
  const base = await findBase(note, snaps, h.from);
  if (!base) {
    const named = snaps.find((s) => s.name === h.from!.name);
    const why = named ? `its snapshot @${named.name} is another snapshot (UUID ${named.uuid}, the stream's base is ${h.from.uuid})` : `it has no snapshot that is the stream's base @${h.from.name} (UUID ${h.from.uuid})`;
    throw new AdminError('EINVAL', `the stream does not apply to ${ref}: ${why}`);
  }
  if (snaps.some((s) => s.name === h.to.name)) throw new AdminError('EEXIST', `${ref} already has a snapshot named '${h.to.name}' (another one than the stream's end point): the stream's TO snapshot could not be made`);
  if (!(await unchangedSince(pool, volume, base.name))) throw new AdminError('EINVAL', `${ref} was written since @${base.name}, the stream's base: the stream applies only to the volume as it was there (strata snapshot revert ${ref}@${base.name} goes back to it)`);
  return {};
}

/** The local snapshot that is `point`: the same UUID, or one recorded as holding the same bytes (imported from it, or it from this one). */
export async function findBase(note: DiffImports, snaps: SnapshotInfo[], point: DiffPoint): Promise<SnapshotInfo | undefined> {
  const same = snaps.find((s) => s.uuid === point.uuid);
  if (same) return same;
  const alike = note.sameAs(point.uuid);
  return snaps.find((s) => alike.has(s.uuid));
}

/** A pending import of another stream that never wrote (or was reverted): the volume stands exactly at its base again. */
async function pendingLeftNothing(pool: Pool, ctx: ImportDiffContext, note: DiffImports, volume: string, p: PendingImport): Promise<boolean> {
  if (p.from === null || p.createdVolume) return false;
  const snaps = await snapshotsOf(pool, ctx.poolName, volume);
  const base = await findBase(note, snaps, p.from);
  return base !== undefined && (await unchangedSince(pool, volume, base.name));
}

export async function unchangedSince(pool: Pool, volume: string, snapshot: string): Promise<boolean> {
  for await (const _ of diffRanges(pool, volume, snapshot, null)) return false;
  return true;
}

/** Data records in flight at once: the volume sees several writes together (each at most 4 MiB, so memory stays bounded). */
const DEPTH = 4;

/** How often (in bytes of records applied) a long import notes how far it got, flushed. */
const CHECKPOINT_BYTES = 256 * 1024 * 1024;

export interface Checkpoints {
  /** Records ending at or below this offset were written and flushed by a run that was cut short. */
  skipBelow: number;
  every: number;
  /** Called with no write in flight, with the offset below which every record is applied. */
  checkpoint(through: number): Promise<void>;
}

/** Applies every record (records never overlap, so their writes may run together); with `vol` null, only reads and checks them. */
export async function applyRecords(reader: DiffStreamReader, vol: Volume | null, cp: Checkpoints, signal: AbortSignal | undefined, progress: (done: number) => void): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  let failure: { err: unknown } | undefined;
  let done = 0;
  let sinceCheckpoint = 0;
  const launch = (write: Promise<void>, end: number): void => {
    const p: Promise<void> = write.then(
      () => {
        inFlight.delete(p);
        // Writes end in any order; progress only moves forward.
        progress((done = Math.max(done, end)));
      },
      (err: unknown) => {
        inFlight.delete(p);
        failure ??= { err };
      },
    );
    inFlight.add(p);
  };
  try {
    for (let r = await reader.record(); r; r = await reader.record()) {
      if (failure) break;
      if (signal?.aborted) throw new Error('interrupted');
      const length = r.kind === 'data' ? r.data.length : r.length;
      const end = r.offset + length;
      if (!vol || end <= cp.skipBelow) {
        progress((done = Math.max(done, end)));
        continue;
      }
      if (r.kind === 'data') launch(vol.write(r.data, r.offset), end);
      else launch(vol.writeZeroes(r.offset, r.length, { mayUnmap: true }), end);
      if (inFlight.size >= DEPTH) await Promise.race(inFlight);
      // Zero records cost the volume little: data decides when to checkpoint.
      if (r.kind === 'data') sinceCheckpoint += length;
      if (sinceCheckpoint >= cp.every) {
        await Promise.all(inFlight);
        if (failure) break;
        // Every record up to this one is written: records come in offset order.
        await cp.checkpoint(end);
        sinceCheckpoint = 0;
      }
    }
  } finally {
    // Nothing is left running when this returns or throws: the volume is closed next.
    await Promise.all(inFlight);
  }
  if (failure) throw failure.err;
}

function sameStream(p: PendingImport, h: DiffHeader): boolean {
  return p.to.uuid === h.to.uuid && (p.from?.uuid ?? null) === (h.from?.uuid ?? null);
}

function streamName(p: PendingImport): string {
  return `the stream ${p.from ? `from @${p.from.name}` : '(full)'} to @${p.to.name} (${formatSize(p.size)})`;
}

export async function volumeExists(pool: Pool, volume: string): Promise<boolean> {
  try {
    await pool.volumeInfo(volume);
    return true;
  } catch (err) {
    if (err instanceof PoolError && err.code === 'ENOENT') return false;
    throw err;
  }
}

async function holdsData(pool: Pool, volume: string): Promise<boolean> {
  const vol = await pool.openVolume(volume, { readOnly: true });
  try {
    return (await allocatedBytes(vol, 0)) > 0;
  } finally {
    await vol.close();
  }
}
