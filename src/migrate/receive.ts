import { loadXxhash } from '../blockdev/xxhash.js';
import type { Pool } from '../qcowlike/index.js';
import { cloneVolume, convertToTemplate, createSnapshots, deleteSnapshot, listSnapshots, type SnapshotInfo } from '../snapshot/index.js';
import { DiffStreamReader } from '../snapshot/diff-stream-reader.js';
import type { DiffPoint } from '../snapshot/diff-stream.js';
import { AdminError } from '../host/admin.js';
import { applyRecords, findBase, unchangedSince, volumeExists } from '../host/diff-import.js';
import { DiffImports } from '../host/diff-imports.js';
import { ReceiveNote, tokenOf, type PendingReceive } from './receive-note.js';
import { SendStreamReader } from './send-stream-reader.js';
import { SendStreamError, type SendManifest, type SendSection } from './send-stream.js';

export interface ReceiveContext {
  poolName: string;
  home: string;
  /** Clients connected to a volume now (a served pool). */
  clientsOf?(volume: string): number;
  /** The set of volumes changed (a server refreshes its exports). */
  changed?(): void;
  /** Bytes of data applied between two durable checkpoints (default 64 MiB; tests make it small). */
  checkpointBytes?: number;
}

export interface ReceiveResult {
  volume: string;
  stream: string;
  /** Snapshots made on the volume by this run, oldest first (a temporary last one is merged away again). */
  snapshots: string[];
  /** The volume's head reads as this point of the sender's history. */
  to: DiffPoint;
  createdVolume: boolean;
  /** The template the volume is a linked clone of, and whether it was in the pool already (its bytes were not written again). */
  origin: { template: string; reused: boolean } | null;
  /** The stream continued an interrupted receive. */
  resumed: boolean;
  records: number;
  dataBytes: number;
  zeroBytes: number;
  streamBytes: number;
}

/** A receive that stopped part-way: what it holds is durable, and the token continues it. */
export class ReceiveInterrupted extends Error {
  constructor(
    message: string,
    readonly token: string,
    override readonly cause: unknown,
  ) {
    super(message);
    this.name = 'ReceiveInterrupted';
  }
}

const CHECKPOINT_BYTES = 64 * 1024 * 1024;

/**
 * Applies a send stream to `volume`: each section's records, then its TO
 * snapshot, in order; a clone's base section becomes (or finds) a template
 * here that the volume is cloned from. A note in the home says how far it
 * got, checkpointed and flushed, so a receive cut short anywhere throws
 * ReceiveInterrupted with a resume token, and the volume stays marked
 * incomplete until a resumed stream finishes it.
 */
export async function receiveChain(pool: Pool, ctx: ReceiveContext, volume: string, source: AsyncIterable<Uint8Array>, opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {}): Promise<ReceiveResult> {
  await loadXxhash();
  const ref = `${ctx.poolName}/${volume}`;
  const reader = new SendStreamReader(source);
  const m = await reader.manifest();
  const clients = ctx.clientsOf?.(volume) ?? 0;
  if (clients > 0) throw new AdminError('EBUSY', `volume ${ref} has ${clients} connected client${clients === 1 ? '' : 's'}: receive needs it unused`);
  const note = new ReceiveNote(ctx.home, ctx.poolName);
  const imports = new DiffImports(ctx.home, ctx.poolName);
  let pending = note.get(volume);
  if (pending?.createdVolume && !(await volumeExists(pool, volume))) {
    if (pending.stream !== m.stream) {
      // The volume an interrupted receive made was deleted since: nothing of that receive is left.
      note.drop(volume);
      pending = undefined;
    } else {
      // Gone, or never made (a crash between the note and the create): the same stream starts the volume's sections over.
      const firstOwn = m.sections.findIndex((s) => !s.base);
      pending.createdVolume = false;
      if (pending.section >= firstOwn) {
        pending.section = firstOwn;
        pending.through = 0;
      }
      note.set(volume, pending);
    }
  }
  if (m.resume) {
    if (!pending) throw new AdminError('EINVAL', `no interrupted receive into ${ref} to resume: this is a resumed stream (send it without --resume)`);
    if (pending.stream !== m.stream) throw new AdminError('EINVAL', `the resumed stream is another one than ${ref} was receiving (${describe(pending)}): nothing applied`);
    if (m.resume.section > pending.section || (m.resume.section === pending.section && m.resume.through > pending.through)) throw new AdminError('EINVAL', `the resumed stream starts past what ${ref} holds: resume with the token strata receive ${ref} --token prints`);
  } else if (pending && pending.stream !== m.stream) {
    throw new AdminError('EBUSY', `a receive into ${ref} (${describe(pending)}) was interrupted: continue it with strata send --resume ${tokenOf(pending)}, or delete ${ref} to start over`);
  }
  const resumed = pending !== undefined;
  if (!pending) {
    await checkStart(pool, imports, ref, volume, m);
    pending = { stream: m.stream, source: sourceRequest(m), section: 0, through: 0, sections: m.sections.map((s) => s.to), createdVolume: false, startedAt: new Date().toISOString() };
    note.set(volume, pending);
  }
  const p = pending;
  const made: string[] = [];
  let origin: ReceiveResult['origin'] = null;
  const first = m.sections[0]!;
  if (first.omitted && p.section === 0) {
    const have = templateHolding(pool, imports, first.to.uuid);
    if (!have) throw new AdminError('EINVAL', `the stream leaves out the origin ${first.to.name}, and pool holds no template known to be it: send the stream whole`);
    p.baseTemplate = have;
    p.section = 1;
    note.set(volume, p);
  }
  if (first.omitted && p.baseTemplate !== undefined) origin = { template: p.baseTemplate, reused: true };
  const totals = { records: 0, dataBytes: 0, zeroBytes: 0 };
  const total = m.sections.slice(m.resume?.section ?? 0).reduce((n, s) => n + s.size, 0);
  let before = 0;
  try {
    for (let sec = await reader.section(); sec; sec = await reader.section()) {
      const s = m.sections[sec.index]!;
      const diff = new DiffStreamReader(sec.bytes);
      const h = await diff.header();
      if (h.to.uuid !== s.to.uuid || (h.from?.uuid ?? null) !== (s.from?.uuid ?? null) || h.size !== s.size) throw new SendStreamError('ECORRUPT', `send stream: section ${sec.index}'s diff stream is not the one its manifest names`);
      const progress = (done: number): void => opts.onProgress?.(before + done, total);
      const checkOnly = async (): Promise<void> => applyRecords(diff, null, { skipBelow: 0, every: Infinity, checkpoint: async () => undefined }, opts.signal, progress);
      const apply = async (target: string): Promise<void> => {
        const vol = await pool.openVolume(target);
        let writeFailed = false;
        // Every write of a record goes through here: a stream cut after a failed write must not be taken for a clean cut.
        const tracked = Object.create(vol) as typeof vol;
        tracked.write = (data, offset) => vol.write(data, offset).catch((err: unknown) => ((writeFailed = true), Promise.reject(err)));
        tracked.writeZeroes = (offset, length, o) => vol.writeZeroes(offset, length, o).catch((err: unknown) => ((writeFailed = true), Promise.reject(err)));
        let reached = 0;
        const checkpoint = async (through: number): Promise<void> => {
          await vol.flush();
          p.through = through;
          note.set(volume, p);
        };
        try {
          await applyRecords(diff, tracked, { skipBelow: sec.index === p.section ? p.through : 0, every: ctx.checkpointBytes ?? CHECKPOINT_BYTES, checkpoint }, opts.signal, (done) => progress((reached = Math.max(reached, done))));
          await vol.flush();
        } catch (err) {
          // A cut stream (or a cancel) stops between records: every record read was written, so all of it up to there is made durable for the resume.
          if (!writeFailed && reached > p.through) await checkpoint(reached).catch(() => undefined);
          throw err;
        } finally {
          await vol.close();
        }
      };
      if (sec.index < p.section) await checkOnly();
      else if (s.base) origin = await receiveBase(pool, imports, p, s, { checkOnly, apply, save: () => note.set(volume, p), changed: ctx.changed });
      else {
        await ensureVolume(pool, p, volume, s, () => note.set(volume, p), ctx.changed);
        let snap = (await listSnapshots(pool, volume)).find((x) => x.name === s.to.name);
        if (snap) {
          // Made by a run cut short between the snapshot and its note: the stream is only checked.
          if (!(await unchangedSince(pool, volume, snap.name))) throw new AdminError('EEXIST', `${ref} already has a snapshot named '${s.to.name}' and was written since: the stream's snapshot could not be made`);
          await checkOnly();
        } else {
          const info = await pool.volumeInfo(volume);
          if (info.size !== s.size) await pool.resizeVolume(volume, s.size, { force: true });
          await apply(volume);
          snap = (await createSnapshots(pool, [{ volume, snapshot: s.to.name }]))[0]!;
          made.push(snap.name);
        }
        imports.finish(volume, { volume, snapshot: snap.name, uuid: snap.uuid, source: s.to.uuid });
      }
      if (sec.index >= p.section) {
        p.section = sec.index + 1;
        p.through = 0;
        note.set(volume, p);
      }
      const t = diff.totals();
      totals.records += t.records;
      totals.dataBytes += t.dataBytes;
      totals.zeroBytes += t.zeroBytes;
      before += s.size;
      ctx.changed?.();
    }
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new ReceiveInterrupted(`receive into ${ref} stopped: ${message}`, tokenOf(note.get(volume) ?? p), err);
  }
  const last = m.sections[m.sections.length - 1]!;
  if (m.temporary) {
    // A delete with one child: metadata only. The head reads as the sender's volume did.
    await deleteSnapshot(pool, { volume, snapshot: last.to.name });
    made.splice(made.indexOf(last.to.name), 1);
  }
  if ((await pool.volumeInfo(volume)).incomplete) await pool.completeVolume(volume);
  note.drop(volume);
  ctx.changed?.();
  if (!origin && p.baseTemplate) origin = { template: p.baseTemplate, reused: false };
  return { volume, stream: m.stream, snapshots: made, to: last.to, createdVolume: p.createdVolume, origin, resumed, ...totals, streamBytes: reader.position };
}

/** The send request a stream answers, as a resume token names it. */
function sourceRequest(m: SendManifest): PendingReceive['source'] {
  const own = m.sections.find((s) => !s.base)!;
  return { volume: m.volume, from: m.sections[0]!.base ? null : (own.from?.name ?? null), to: m.sections[m.sections.length - 1]!.to.name };
}

function describe(p: PendingReceive): string {
  return `${p.source.volume}${p.source.from ? ` from @${p.source.from}` : ''} to @${p.source.to}, section ${p.section + 1} of ${p.sections.length}`;
}

/** Refuses a stream that does not apply to the volume as it stands, before anything is written. */
async function checkStart(pool: Pool, imports: DiffImports, ref: string, volume: string, m: SendManifest): Promise<void> {
  const first = m.sections[0]!;
  const exists = await volumeExists(pool, volume);
  if (first.base || first.from === null) {
    if (exists) throw new AdminError('EEXIST', `${ref} exists: a whole stream (no --from) creates its volume; receive it under a new name, or send an incremental stream (--from) to it`);
    if (first.omitted && !templateHolding(pool, imports, first.to.uuid)) throw new AdminError('EINVAL', `the stream leaves out the origin ${first.to.name} of ${m.volume}, and pool holds no template known to be it: send the stream whole`);
    return;
  }
  if (!exists) throw new AdminError('ENOENT', `volume ${ref} not found: an incremental stream (from @${first.from.name}) applies to a volume holding its base; receive the whole stream first`);
  const snaps = await listSnapshots(pool, volume);
  const base = await findBase(imports, snaps, first.from);
  if (!base) {
    const named = snaps.find((s) => s.name === first.from!.name);
    const why = named ? `its snapshot @${named.name} is another snapshot (UUID ${named.uuid}, the stream's base is ${first.from.uuid})` : `it has no snapshot that is the stream's base @${first.from.name} (UUID ${first.from.uuid})`;
    throw new AdminError('EINVAL', `the stream does not apply to ${ref}: ${why}`);
  }
  if (!(await unchangedSince(pool, volume, base.name))) throw new AdminError('EINVAL', `${ref} was written since @${base.name}, the stream's base: it applies only to the volume as it was there (strata snapshot revert ${ref}@${base.name} goes back to it)`);
  const clash = m.sections.find((s) => snaps.some((x: SnapshotInfo) => x.name === s.to.name));
  if (clash) throw new AdminError('EEXIST', `${ref} already has a snapshot named '${clash.to.name}': the stream's snapshot could not be made`);
}

/** The volume the section applies to: created (a whole stream) or cloned from the base template (a clone's) the first time. */
async function ensureVolume(pool: Pool, p: PendingReceive, volume: string, s: SendSection, save: () => void, changed?: () => void): Promise<void> {
  if (await volumeExists(pool, volume)) return;
  p.createdVolume = true;
  save();
  if (s.from === null) await pool.createVolume(volume, s.size, { incomplete: true });
  else if (p.baseTemplate) {
    // A clone reads whole from its first commit: marked incomplete so that no server exports it half received.
    await cloneVolume(pool, { template: p.baseTemplate }, volume);
    await pool.markIncomplete(volume);
  } else throw new AdminError('ENOENT', `volume '${volume}' is gone from pool while a receive was filling it`);
  changed?.();
}

interface BaseSteps {
  checkOnly(): Promise<void>;
  apply(target: string): Promise<void>;
  save(): void;
  changed?: () => void;
}

/**
 * A clone's origin: a template of this pool known to hold its bytes (the
 * same UUID, or linked by the home's import records) is used as it is, so a
 * base several clones share is written once; otherwise the section fills a
 * new volume that then becomes the template, linked to the origin's UUID.
 */
async function receiveBase(pool: Pool, imports: DiffImports, p: PendingReceive, s: SendSection, steps: BaseSteps): Promise<{ template: string; reused: boolean }> {
  const have = templateHolding(pool, imports, s.to.uuid);
  if (have !== null && have !== p.baseTemplate) {
    await steps.checkOnly();
    p.baseTemplate = have;
    return { template: have, reused: true };
  }
  const name = p.baseTemplate ?? freeName(pool, s.to.name.replace(/@/g, '-'));
  if (pool.catalogNow.templates.some((t) => t.name === name)) {
    await steps.checkOnly();
    return { template: name, reused: false };
  }
  if (p.baseTemplate === undefined) {
    p.baseTemplate = name;
    p.baseCreated = true;
    steps.save();
  }
  if (!(await volumeExists(pool, name))) await pool.createVolume(name, s.size, { incomplete: true });
  await steps.apply(name);
  await pool.completeVolume(name);
  const tmpl = await convertToTemplate(pool, name);
  imports.finish(name, { volume: name, snapshot: name, uuid: tmpl.uuid, source: s.to.uuid });
  steps.changed?.();
  return { template: name, reused: false };
}

/** The template of this pool that holds the bytes of snapshot or template `uuid`: the same UUID, or linked to it by the home's import records. */
export function templateHolding(pool: Pool, imports: DiffImports, uuid: string): string | null {
  const alike = imports.sameAs(uuid);
  return pool.catalogNow.templates.find((t) => alike.has(t.uuid))?.name ?? null;
}

function freeName(pool: Pool, want: string): string {
  const c = pool.catalogNow;
  const taken = (n: string): boolean => c.volumes.some((v) => v.name === n) || c.templates.some((t) => t.name === n);
  const base = want.slice(0, 60);
  if (!taken(base)) return base;
  for (let i = 2; ; i++) if (!taken(`${base}-${i}`)) return `${base}-${i}`;
}
