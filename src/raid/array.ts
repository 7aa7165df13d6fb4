import { BlockDeviceError, ReusableBuffers, Serializer, checkRange, checkWritable, type BlockDevice, type BlockOp, type Redundancy, type WriteOptions, type WriteZeroesOptions } from '../blockdev/index.js';
import { MemberLost, type Engine, type MemberIO, type Mismatch } from './engine.js';
import { levelDescriptor, MirrorLayout, ParityLayout, type LevelDescriptor, type RaidLevel } from './levels/index.js';
import { MirrorEngine } from './mirror-engine.js';
import { ParityEngine } from './parity-engine.js';
import { BITMAP_OFFSET, DATA_OFFSET, encodeSuperblock, newUuid, slotOffset, SPARE_ROLE, type MemberState, type RoleEntry } from './superblock.js';
import { PendingRepairs, type PendingRepair } from './pending-repairs.js';
import { WriteIntentBitmap } from './write-intent.js';
import { releaseMember } from './release.js';
import { RaidError } from './errors.js';

/** The shape of an array, fixed at creation and carried in every superblock. */
export interface ArrayGeometry {
  uuid: string;
  name: string;
  level: RaidLevel;
  copies: number;
  members: number;
  chunk: number;
  rows: number;
  size: number;
  /** Rows per write-intent bitmap bit. */
  regionRows: number;
  createdMs: number;
}

/** One role of the array (or one spare) and the device that fills it. */
export interface MemberSlot {
  dev: BlockDevice | undefined;
  /** Device UUID written in the member's superblock; '' for an empty role. */
  device: string;
  state: MemberState;
  /** For 'rebuilding': rows of this member already rebuilt. */
  rebuiltRows: number;
  /**
   * Hot replace: the in-sync device being replaced. Until the rebuild passes
   * a row, the role's reads of it come from here and writes go to both, so
   * the array keeps its full redundancy while the new device fills.
   */
  source?: BlockDevice;
}

export interface RaidArrayOptions {
  readOnly?: boolean;
  /** Start rebuilding in the background as soon as a spare takes over a failed role (a serving array). */
  autoRebuild?: boolean;
  /** Rebuild rate limit in bytes per second of member data, 0 or absent for none. */
  rebuildRate?: number;
  /** How a background rebuild starts (a host runs it as a job it can follow and cancel); rebuild() at rebuildRate if absent. */
  startRebuild?: (array: RaidArray) => Promise<void>;
  /** Called with anything a person should know: member failures, spares taking over. */
  onEvent?: (message: string) => void;
}

export interface RebuildProgress {
  role: number;
  device: string;
  rowsDone: number;
  rows: number;
  bytesDone: number;
  bytesTotal: number;
  fraction: number;
}

export interface RebuildOptions {
  /** Bytes per second of member data (0 = unlimited). */
  rate?: number;
  onProgress?: (p: RebuildProgress) => void;
  /** Rows per step (default about 1 MiB of each member); between steps other I/O gets in. */
  stepRows?: number;
  /** Milliseconds between resume checkpoints written to the superblocks (default 1000). */
  checkpointMs?: number;
  /** Stops this caller's rebuild at a checkpoint (the role stays rebuilding, to resume later); the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface ScrubOptions {
  repair?: boolean;
  onProgress?: (fraction: number) => void;
  /** Stops the scrub between steps; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface ScrubReport {
  bytesChecked: number;
  /** Array bytes with no redundancy left to compare (members out): not checked. */
  bytesUnchecked: number;
  mismatches: Mismatch[];
  repaired: boolean;
}

export interface MemberStatus {
  role: number | 'spare';
  device: string;
  uuid: string;
  state: MemberState;
  /** Fraction rebuilt, for 'rebuilding'. */
  rebuilt?: number;
}

export interface ArrayStatus {
  name: string;
  uuid: string;
  level: RaidLevel;
  layout: string;
  chunk: number;
  size: number;
  events: number;
  state: 'optimal' | 'degraded' | 'rebuilding' | 'failed';
  degraded: boolean;
  members: MemberStatus[];
  spares: MemberStatus[];
  rebuild: RebuildProgress | undefined;
  dirtyRegions: number;
  /** Repairs found needed while the array was open read-only, not yet written (see PendingRepair). */
  pendingRepairs: PendingRepair[];
  counters: {
    /** Member copies rewritten through the redundancy hook (checksum-driven self-heal). */
    repairs: number;
    readErrors: number;
    writeErrors: number;
    /** Stripes or chunks found inconsistent by scrub or resync. */
    mismatches: number;
    /** Dirty regions resynced after an unclean shutdown. */
    resyncedRegions: number;
    /** Ranges with a repair pending (read-only open): a copy differs from data the pool verified. */
    pendingRepairs: number;
  };
}

/** Rows per rebuild or scrub step: about 1 MiB of each member, never less than one row. */
function rowsPerStep(chunk: number): number {
  return Math.max(1, Math.floor((1024 * 1024) / chunk));
}

/**
 * A RAID array: a BlockDevice over member BlockDevices. The level's engine
 * maps requests to members; this core owns member state, superblocks, the
 * write-intent bitmap, failure handling (a member that errors is failed and
 * the request retried on the degraded array), rebuild and scrub.
 */
export class RaidArray implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly blockSize: number;
  readonly preferredBlockSize: number;
  readonly discardZeroes = true;
  readonly readOnly: boolean;
  readonly redundancy: Redundancy | undefined;
  readonly level: LevelDescriptor;
  private readonly engine: Engine;
  private readonly mirror: MirrorLayout | undefined;
  private readonly parity: ParityLayout | undefined;
  private readonly pool: ReusableBuffers;
  private readonly bitmap: WriteIntentBitmap;
  private events: number;
  private readonly meta = new Serializer();
  private closed = false;
  private rebuilding: { progress: RebuildProgress | undefined; stop: boolean; done: Promise<void> } | undefined;
  private readonly counters = { repairs: 0, readErrors: 0, writeErrors: 0, mismatches: 0, resyncedRegions: 0 };
  private readonly pending = new PendingRepairs();
  private toldPending = false;

  constructor(
    readonly geometry: ArrayGeometry,
    private readonly slots: MemberSlot[],
    private readonly spares: MemberSlot[],
    events: number,
    bitmapBits: Uint8Array | undefined,
    private readonly opts: RaidArrayOptions = {},
  ) {
    const g = geometry;
    this.level = levelDescriptor(g.level);
    this.name = `raid${g.level}:${g.name || g.uuid.slice(0, 8)}`;
    this.size = g.size;
    this.readOnly = opts.readOnly ?? false;
    this.events = events;
    const devs = slots.map((s) => s.dev).filter((d): d is BlockDevice => d !== undefined);
    this.blockSize = Math.max(512, ...devs.map((d) => d.blockSize));
    this.pool = new ReusableBuffers(g.chunk);
    const io = this.memberIO();
    if (this.level.kind === 'mirror') {
      this.mirror = new MirrorLayout(g.members, g.copies, g.chunk, g.rows);
      this.engine = new MirrorEngine(this.mirror, io, this.name);
      this.preferredBlockSize = g.chunk;
    } else {
      this.parity = new ParityLayout(g.members, this.level.parity as 1 | 2, g.chunk, g.rows);
      this.engine = new ParityEngine(this.parity, io, this.name);
      this.preferredBlockSize = g.chunk * this.parity.dataPerStripe;
    }
    if (this.engine.capacity < g.size) throw new RaidError('EINVAL', `${this.name}: size ${g.size} exceeds what the members hold (${this.engine.capacity})`);
    const regions = Math.ceil(g.rows / g.regionRows);
    this.bitmap = new WriteIntentBitmap(g.regionRows, regions, bitmapBits, (bits, durable) => this.storeBitmap(bits, durable));
    this.redundancy = g.level === 0 ? undefined : this.makeRedundancy();
  }

  // ---- BlockDevice ----

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.checkOpen('read');
    checkRange(this, 'read', offset, buf.length);
    if (buf.length === 0) return;
    await this.retrying('read', offset, buf.length, () => this.engine.read(buf, offset));
  }

  async write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    this.checkOpen('write');
    checkWritable(this, 'write', offset, buf.length);
    checkRange(this, 'write', offset, buf.length);
    if (buf.length > 0) await this.intending(offset, buf.length, () => this.retrying('write', offset, buf.length, () => this.engine.write(buf, offset)));
    if (opts?.fua) await this.flush();
  }

  async flush(): Promise<void> {
    this.checkOpen('flush');
    if (this.readOnly) return;
    const epoch = this.bitmap.flushStarted();
    await this.flushMembers();
    await this.bitmap.afterFlush(epoch);
  }

  async discard(offset: number, length: number): Promise<void> {
    return this.zero('discard', offset, length, undefined);
  }

  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    return this.zero('writeZeroes', offset, length, opts);
  }

  /** Stops a rebuild at a checkpoint, flushes, clears the bitmap, marks every member clean and closes them. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.rebuilding) {
      this.rebuilding.stop = true;
      await this.rebuilding.done.catch(() => undefined);
    }
    try {
      if (!this.readOnly && !this.failed()) {
        await this.flushMembers();
        await this.bitmap.clearAll();
        await this.persist(true);
      }
    } finally {
      this.closed = true;
      for (const s of [...this.slots, ...this.spares]) {
        await s.dev?.close().catch(() => undefined);
        await s.source?.close().catch(() => undefined);
      }
    }
  }

  // ---- state ----

  status(): ArrayStatus {
    const g = this.geometry;
    const member = (s: MemberSlot, role: number | 'spare'): MemberStatus => ({
      role,
      device: s.dev?.name ?? '(missing)',
      uuid: s.device,
      state: s.state,
      ...(s.state === 'rebuilding' ? { rebuilt: s.rebuiltRows / g.rows } : {}),
    });
    const degraded = this.slots.some((s) => s.state !== 'active');
    const failed = this.failed();
    return {
      name: g.name,
      uuid: g.uuid,
      level: g.level,
      layout: this.level.layoutName(g.members, g.copies),
      chunk: g.chunk,
      size: g.size,
      events: this.events,
      state: failed ? 'failed' : this.slots.some((s) => s.state === 'rebuilding') ? 'rebuilding' : degraded ? 'degraded' : 'optimal',
      degraded,
      members: this.slots.map((s, i) => member(s, i)),
      spares: this.spares.map((s) => member(s, 'spare')),
      rebuild: this.rebuilding?.progress,
      dirtyRegions: this.bitmap.dirtyRegions().length,
      pendingRepairs: this.pending.list(),
      counters: { ...this.counters, pendingRepairs: this.pending.size },
    };
  }

  /**
   * The role of a member given by role number, by the device UUID its
   * superblock carries (`raid status` and `raid examine` show it; a unique
   * prefix of 8 or more hex digits will do), or by device name (path). The
   * UUID names the member whatever path it was opened by.
   */
  roleOf(member: number | string): number {
    if (typeof member === 'number' || /^\d+$/.test(member)) {
      const r = Number(member);
      if (r < 0 || r >= this.slots.length) throw new RaidError('ENOENT', `${this.name}: no member role ${r} (roles are 0 to ${this.slots.length - 1})`);
      return r;
    }
    const r = this.indexOf(this.slots, member);
    if (r < 0) throw new RaidError('ENOENT', `${this.name}: '${member}' is not an active member of this array`);
    return r;
  }

  /** Where in `slots` the member named by device UUID (or a unique prefix of it) or device name is; -1 when none. */
  private indexOf(slots: MemberSlot[], member: string): number {
    const hex = member.toLowerCase().replace(/-/g, '');
    if (/^[0-9a-f]{8,32}$/.test(hex)) {
      const hits = slots.flatMap((s, i) => (s.device !== '' && s.device.startsWith(hex) ? [i] : []));
      if (hits.length > 1) throw new RaidError('EINVAL', `${this.name}: '${member}' is the start of ${hits.length} members' UUIDs; give more of it`);
      if (hits.length === 1) return hits[0]!;
    }
    return slots.findIndex((s) => s.dev?.name === member);
  }

  /** Marks a member faulty, as md's --fail. Refuses when the array could not survive it. */
  async fail(member: number | string): Promise<void> {
    const role = this.roleOf(member);
    const s = this.slots[role]!;
    if (s.state === 'faulty' || s.state === 'missing') throw new RaidError('ESTATE', `${this.name}: member ${role} is already ${s.state}`);
    const without = this.slots.map((x, i) => i === role || !this.serving(x));
    if (!this.survives(without)) throw new RaidError('ESTATE', `${this.name}: failing member ${role} (${s.dev?.name}) would lose data: RAID ${this.geometry.level} cannot survive it now`);
    s.state = 'faulty';
    this.event(`member ${role} (${s.dev?.name}) marked faulty`);
    await this.persist();
    await this.takeSpare();
  }

  /** Removes a faulty or missing member (or a spare, by name) and closes its device. */
  async remove(member: number | string): Promise<void> {
    const spare = typeof member === 'string' && !/^\d+$/.test(member) ? this.indexOf(this.spares, member) : -1;
    if (spare >= 0) {
      const [s] = this.spares.splice(spare, 1);
      await this.persist();
      if (s!.dev) await releaseMember(s!.dev, this.events);
      return;
    }
    const role = this.roleOf(member);
    const s = this.slots[role]!;
    if (s.state === 'active' || s.state === 'rebuilding') throw new RaidError('ESTATE', `${this.name}: member ${role} (${s.dev?.name}) is ${s.state}; fail it first`);
    const dev = s.dev;
    this.slots[role] = { dev: undefined, device: '', state: 'missing', rebuiltRows: 0 };
    await this.persist();
    if (dev) await releaseMember(dev, this.events);
  }

  /**
   * Adds a device: it takes the first missing or faulty role and is rebuilt
   * (call rebuild(), or it starts at once with autoRebuild), or becomes a
   * hot spare if every role is filled. Resolves to its role, or 'spare'.
   */
  async add(dev: BlockDevice): Promise<number | 'spare'> {
    this.checkOpen('write');
    const need = DATA_OFFSET + this.geometry.rows * this.geometry.chunk;
    if (dev.size < need) throw new RaidError('ENOSPC', `${this.name}: ${dev.name} is too small (${dev.size} bytes; members need ${need})`);
    if ([...this.slots, ...this.spares].some((s) => s.dev === dev || (s.dev && s.dev.name === dev.name && dev.name !== 'memory'))) {
      throw new RaidError('EEXIST', `${this.name}: ${dev.name} is already in this array`);
    }
    await dev.writeZeroes(0, DATA_OFFSET);
    const slot: MemberSlot = { dev, device: newUuid(), state: 'spare', rebuiltRows: 0 };
    const role = this.slots.findIndex((s) => s.state === 'missing' || s.state === 'faulty');
    if (role < 0) {
      this.spares.push(slot);
      await this.persist();
      return 'spare';
    }
    await this.assign(role, slot);
    return role;
  }

  /**
   * Puts `dev` in the role of `member`, to be rebuilt. An active member is
   * replaced hot, as md's --replace: it keeps serving its role until the
   * rebuild has passed each row, so redundancy never drops (a crash
   * mid-replace falls back to a plain rebuild). A faulty or missing member
   * is simply removed first.
   */
  async replace(member: number | string, dev: BlockDevice): Promise<number> {
    const role = this.roleOf(member);
    const s = this.slots[role]!;
    const need = DATA_OFFSET + this.geometry.rows * this.geometry.chunk;
    if (dev.size < need) throw new RaidError('ENOSPC', `${this.name}: ${dev.name} is too small (${dev.size} bytes; members need ${need})`);
    if (s.state === 'rebuilding' && !s.source) {
      s.state = 'faulty';
    }
    if (s.state === 'active' && s.dev) {
      await dev.writeZeroes(0, DATA_OFFSET);
      await this.assign(role, { dev, device: newUuid(), state: 'spare', rebuiltRows: 0, source: s.dev });
      return role;
    }
    if (s.state === 'rebuilding') throw new RaidError('ESTATE', `${this.name}: member ${role} is already being replaced`);
    await this.remove(role);
    await dev.writeZeroes(0, DATA_OFFSET);
    await this.assign(role, { dev, device: newUuid(), state: 'spare', rebuiltRows: 0 });
    return role;
  }

  /** True while some role is being rebuilt. */
  needsRebuild(): boolean {
    return this.slots.some((s) => s.state === 'rebuilding');
  }

  /**
   * Rebuilds every role in state 'rebuilding', from its checkpoint (so a
   * rebuild cut short by a crash resumes where it stopped). Resolves when the
   * array is whole, or when close() stops it. Only one runs at a time.
   */
  rebuild(opts: RebuildOptions = {}): Promise<void> {
    if (this.rebuilding) return this.rebuilding.done;
    const state: { progress: RebuildProgress | undefined; stop: boolean; done: Promise<void> } = { progress: undefined, stop: false, done: Promise.resolve() };
    this.rebuilding = state;
    state.done = this.runRebuild(state, opts).finally(() => {
      if (this.rebuilding === state) this.rebuilding = undefined;
    });
    return state.done;
  }

  /** Compares mirrors / parity over the whole array; with `repair` makes them agree (RAID 6 finds the bad block itself). */
  async scrub(opts: ScrubOptions = {}): Promise<ScrubReport> {
    this.checkOpen('read');
    if (opts.repair && this.readOnly) throw new BlockDeviceError('EROFS', this.name, 'write', 'array is read-only');
    // With members out, a mismatch can be found but not always placed; repairing then could overwrite the only good copy.
    if (opts.repair && this.status().degraded) {
      throw new BlockDeviceError('EINVAL', this.name, 'write', 'array is degraded: a repairing scrub needs every member (rebuild first; a scrub that only checks checks what redundancy remains)');
    }
    const rows = this.geometry.rows;
    const step = rowsPerStep(this.geometry.chunk);
    const mismatches: Mismatch[] = [];
    let unchecked = 0;
    for (let r = 0; r < rows; r += step) {
      if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : new Error('scrub cancelled');
      const end = Math.min(rows, r + step);
      const part = opts.repair ? await this.rowsIntending(r, end, () => this.engine.scrub(r, end, true)) : await this.engine.scrub(r, end, false);
      mismatches.push(...part.mismatches);
      unchecked += part.unchecked;
      opts.onProgress?.(end / rows);
    }
    this.counters.mismatches += mismatches.length;
    unchecked = Math.min(unchecked, this.engine.capacity);
    return { bytesChecked: this.engine.capacity - unchecked, bytesUnchecked: unchecked, mismatches, repaired: opts.repair ?? false };
  }

  /** Makes every region the write-intent bitmap marks consistent again (after an unclean shutdown). */
  async resyncDirty(): Promise<{ regions: number; mismatches: number }> {
    const regions = this.bitmap.dirtyRegions();
    let mismatches = 0;
    const rr = this.geometry.regionRows;
    for (const g of regions) {
      const found = await this.engine.scrub(g * rr, Math.min(this.geometry.rows, (g + 1) * rr), true);
      mismatches += found.mismatches.length;
      this.bitmap.clear(g);
    }
    this.counters.resyncedRegions += regions.length;
    this.counters.mismatches += mismatches;
    if (regions.length) await this.storeBitmap(this.bitmap.bits, true);
    return { regions: regions.length, mismatches };
  }

  /** Repairs recorded while read-only and not yet written. */
  pendingRepairs(): PendingRepair[] {
    return this.pending.list();
  }

  /** Takes repairs recorded by an earlier read-only open (kept by the caller), to report them and to carry them out. */
  addPendingRepairs(list: PendingRepair[]): void {
    for (const p of list) this.pending.add(p);
  }

  /**
   * Carries out the pending repairs (a read-write open, before it serves).
   * The data the pool verified is not kept, so each range is read by every
   * way the array offers, and a way is taken as right only when the copies
   * that differ from it are among the members recorded as bad: the same
   * verdict the checksum gave. A range whose copies all agree now (rewritten
   * since) is dropped; one no way explains is dropped with an event, to be
   * found again by the pool's checksums (pool check --repair).
   */
  async repairPending(): Promise<{ repaired: number; dropped: number }> {
    this.checkOpen('write');
    if (this.readOnly) return { repaired: 0, dropped: 0 };
    if (this.status().degraded) return { repaired: 0, dropped: 0 };
    let repaired = 0;
    let dropped = 0;
    for (const p of this.pending.list()) {
      const buf = Buffer.alloc(p.length);
      let fixed = false;
      let agree = false;
      for (let c = 0; c < this.engine.copies(p.offset, p.length) && !fixed && !agree; c++) {
        try {
          await this.engine.readCopy(buf, p.offset, c);
        } catch {
          continue;
        }
        const differ = await this.retrying('read', p.offset, p.length, () => this.engine.repair(buf, p.offset, true));
        if (differ.size === 0) agree = c === 0;
        else if ([...differ].every((m) => p.members.includes(m))) {
          await this.redundancy!.repair(buf, p.offset);
          fixed = true;
        }
      }
      this.pending.delete(p);
      if (fixed) repaired++;
      else if (!agree) {
        dropped++;
        this.event(`pending repair of ${p.length} bytes at ${p.offset} (member(s) ${p.members.join(', ')}) no longer matches what the members hold; left to the pool's checksums`);
      }
    }
    return { repaired, dropped };
  }

  /** Dirty regions of the write-intent bitmap, for tests and status. */
  dirtyRegions(): number[] {
    return this.bitmap.dirtyRegions();
  }

  /** Writes the superblocks now (assembly marks the array in use this way). */
  async markInUse(): Promise<void> {
    if (!this.readOnly) await this.persist(false);
  }

  /** Holds every row of its role now: active, or being hot-replaced from an in-sync device. */
  private serving(s: MemberSlot): boolean {
    return s.state === 'active' || (s.state === 'rebuilding' && s.source !== undefined);
  }

  failed(): boolean {
    return !this.survives(this.slots.map((s) => s.state !== 'active' && s.state !== 'rebuilding'));
  }

  // ---- internals ----

  private survives(failed: boolean[]): boolean {
    return this.mirror ? this.mirror.survives(failed) : this.parity!.survives(failed);
  }

  private memberIO(): MemberIO {
    const slots = this.slots;
    return {
      members: this.geometry.members,
      chunk: this.geometry.chunk,
      readable: (m, row) => {
        const s = slots[m]!;
        return s.dev !== undefined && (s.state === 'active' || (s.state === 'rebuilding' && (row < s.rebuiltRows || s.source !== undefined)));
      },
      writable: (m) => {
        const s = slots[m]!;
        return s.dev !== undefined && (s.state === 'active' || s.state === 'rebuilding');
      },
      read: (m, buf, offset) => {
        const s = slots[m]!;
        if (s.source && Math.floor(offset / this.geometry.chunk) >= s.rebuiltRows) return this.sourceRead(m, s, buf, offset);
        if (!s.dev) return this.gone(m, 'read');
        return s.dev.read(buf, DATA_OFFSET + offset).then(undefined, (err: unknown) => this.memberError(m, err, 'read'));
      },
      write: (m, buf, offset) => {
        const s = slots[m]!;
        if (!s.dev) return this.gone(m, 'write');
        const done = s.dev.write(buf, DATA_OFFSET + offset).then(undefined, (err: unknown) => this.memberError(m, err, 'write'));
        if (!s.source) return done;
        return Promise.all([done, this.sourceWrite(s, (src) => src.write(buf, DATA_OFFSET + offset))]).then(() => undefined);
      },
      zero: (m, offset, length) => {
        const s = slots[m]!;
        if (!s.dev) return this.gone(m, 'write');
        const done = s.dev.writeZeroes(DATA_OFFSET + offset, length, { mayUnmap: true }).then(undefined, (err: unknown) => this.memberError(m, err, 'write'));
        if (!s.source) return done;
        return Promise.all([done, this.sourceWrite(s, (src) => src.writeZeroes(DATA_OFFSET + offset, length, { mayUnmap: true }))]).then(() => undefined);
      },
      take: () => this.pool.take(),
      give: (b) => this.pool.give(b),
    };
  }

  /** A read from a device being replaced; if it fails, the replace goes on as a plain rebuild. */
  private sourceRead(m: number, s: MemberSlot, buf: Uint8Array, offset: number): Promise<void> {
    const src = s.source!;
    return src.read(buf, DATA_OFFSET + offset).then(undefined, (err: unknown) => {
      this.dropSource(s, err);
      throw new MemberLost(m, err);
    });
  }

  private sourceWrite(s: MemberSlot, op: (src: BlockDevice) => Promise<void>): Promise<void> {
    const src = s.source!;
    return op(src).then(undefined, (err: unknown) => this.dropSource(s, err));
  }

  private dropSource(s: MemberSlot, err: unknown): void {
    const src = s.source;
    if (!src || s.source !== src) return;
    s.source = undefined;
    this.event(`${src.name}, being replaced, failed (${err instanceof Error ? err.message : String(err)}); rebuilding its role from the other members`);
    void src.close().catch(() => undefined);
  }

  /** A member request failed: fail the member (as md does) and let the request be retried degraded. */
  /**
   * A member removed while a request that chose it was waiting (a rebuild
   * step, say): the request sees it as lost, and the retry picks the array's
   * state as it is now.
   */
  private gone(m: number, op: 'read' | 'write'): Promise<never> {
    return Promise.reject(new MemberLost(m, new BlockDeviceError('EIO', this.name, op, `member ${m} was removed`)));
  }

  private memberError(m: number, err: unknown, op: 'read' | 'write'): never {
    if (err instanceof BlockDeviceError && (err.code === 'ERANGE' || err.code === 'EINVAL')) throw err;
    if (op === 'read') this.counters.readErrors++;
    else this.counters.writeErrors++;
    this.markFaulty(m, err);
    throw new MemberLost(m, err);
  }

  private markFaulty(m: number, err: unknown): void {
    const s = this.slots[m]!;
    if (s.state !== 'active' && s.state !== 'rebuilding') return;
    s.state = 'faulty';
    this.event(`member ${m} (${s.dev?.name}) failed: ${err instanceof Error ? err.message : String(err)}`);
    if (!this.readOnly) {
      this.persist()
        .then(() => this.takeSpare())
        .catch((e: unknown) => this.event(`could not record the failure of member ${m}: ${e instanceof Error ? e.message : String(e)}`));
    }
  }

  private async retrying<T>(op: BlockOp, offset: number, length: number, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof MemberLost)) throw err;
        // The failure must be on disk before the request completes, or a crash could
        // bring the failed member back as if it were current.
        await this.meta.idle();
        if (this.failed() || attempt >= this.geometry.members) {
          throw new BlockDeviceError('EIO', this.name, op, `array has failed: ${this.slots.filter((s) => s.state !== 'active').length} of ${this.slots.length} members unavailable`, offset, length, err.cause);
        }
      }
    }
  }

  private async intending<T>(offset: number, length: number, fn: () => Promise<T>): Promise<T> {
    const [r0, r1] = this.engine.rowsOf(offset, length);
    return this.rowsIntending(r0, r1, fn);
  }

  private async rowsIntending<T>(r0: number, r1: number, fn: () => Promise<T>): Promise<T> {
    await this.bitmap.begin(r0, r1);
    try {
      return await fn();
    } finally {
      this.bitmap.end(r0, r1);
    }
  }

  private async zero(op: 'discard' | 'writeZeroes', offset: number, length: number, opts: WriteZeroesOptions | undefined): Promise<void> {
    this.checkOpen(op);
    checkWritable(this, op, offset, length);
    checkRange(this, op, offset, length);
    if (length > 0) await this.intending(offset, length, () => this.retrying(op, offset, length, () => this.engine.zero(offset, length)));
    if (opts?.fua) await this.flush();
  }

  private async flushMembers(): Promise<void> {
    const jobs = this.slots.map(async (s, m) => {
      if (!s.dev || (s.state !== 'active' && s.state !== 'rebuilding')) return;
      try {
        await s.dev.flush();
      } catch (err) {
        this.counters.writeErrors++;
        this.markFaulty(m, err);
      }
    });
    await Promise.all(jobs);
    await this.meta.idle();
    if (this.failed()) throw new BlockDeviceError('EIO', this.name, 'flush', 'array has failed: too many members lost');
  }

  /** Superblock updates are serialized; each bumps the event counter and goes to every live member and spare. */
  private persist(clean = false): Promise<void> {
    return this.meta.run(() => this.writeSuperblocks(clean));
  }

  private async writeSuperblocks(clean: boolean): Promise<void> {
    if (this.readOnly) return;
    for (let round = 0; round <= this.slots.length; round++) {
      this.events++;
      const table: RoleEntry[] = [...this.slots, ...this.spares].map((s) => ({ device: s.device, state: s.state, rebuiltRows: s.rebuiltRows }));
      const g = this.geometry;
      const targets: Array<[MemberSlot, number]> = [];
      this.slots.forEach((s, i) => {
        if (s.dev && (s.state === 'active' || s.state === 'rebuilding')) targets.push([s, i]);
      });
      for (const s of this.spares) if (s.dev) targets.push([s, SPARE_ROLE]);
      let lost = false;
      await Promise.all(
        targets.map(async ([s, role]) => {
          const block = encodeSuperblock({
            arrayUuid: g.uuid,
            deviceUuid: s.device,
            level: g.level,
            copies: g.copies,
            clean,
            members: g.members,
            chunk: g.chunk,
            bitmapRegion: g.regionRows * g.chunk,
            rows: g.rows,
            arraySize: g.size,
            events: this.events,
            role,
            createdMs: g.createdMs,
            name: g.name,
            table,
          });
          try {
            await s.dev!.write(block, slotOffset(this.events));
            await s.dev!.flush();
          } catch (err) {
            if (role === SPARE_ROLE) return;
            s.state = 'faulty';
            lost = true;
            this.event(`member ${role} (${s.dev?.name}) failed writing its superblock: ${err instanceof Error ? err.message : String(err)}`);
          }
        }),
      );
      if (!lost) return;
    }
  }

  private async storeBitmap(bits: Uint8Array, durable: boolean): Promise<void> {
    const bytes = Math.ceil(bits.length / 512) * 512;
    const block = Buffer.alloc(bytes);
    block.set(bits);
    await Promise.all(
      this.slots.map(async (s, m) => {
        if (!s.dev || (s.state !== 'active' && s.state !== 'rebuilding')) return;
        try {
          await s.dev.write(block, BITMAP_OFFSET);
          if (durable) await s.dev.flush();
        } catch (err) {
          this.markFaulty(m, err);
        }
      }),
    );
    await this.meta.idle();
  }

  /** A failed role with a hot spare waiting: the spare takes it and is rebuilt. */
  private async takeSpare(): Promise<void> {
    const role = this.slots.findIndex((s) => s.state === 'faulty' || s.state === 'missing');
    if (role < 0 || this.spares.length === 0 || this.closed) return;
    const spare = this.spares.shift()!;
    const old = this.slots[role]!.dev;
    await this.assign(role, spare);
    if (old) await releaseMember(old, this.events);
  }

  private async assign(role: number, slot: MemberSlot): Promise<void> {
    const old = this.slots[role]!;
    slot.state = 'rebuilding';
    slot.rebuiltRows = 0;
    this.slots[role] = slot;
    this.event(`${slot.dev?.name} takes member role ${role}${old.dev ? ` from ${old.dev.name}` : ''}; ${slot.source ? 'copying (hot replace)' : 'rebuilding'}`);
    await this.persist();
    if (this.opts.autoRebuild) {
      (this.opts.startRebuild ? this.opts.startRebuild(this) : this.rebuild({ rate: this.opts.rebuildRate ?? 0 })).catch((e: unknown) => this.event(`rebuild stopped: ${e instanceof Error ? e.message : String(e)}`));
    }
  }

  private async runRebuild(state: { progress: RebuildProgress | undefined; stop: boolean }, opts: RebuildOptions): Promise<void> {
    const g = this.geometry;
    const step = opts.stepRows ?? rowsPerStep(g.chunk);
    const rate = opts.rate ?? 0;
    for (;;) {
      const role = this.slots.findIndex((s) => s.state === 'rebuilding' && s.dev);
      if (role < 0 || state.stop || this.closed) return;
      const slot = this.slots[role]!;
      const started = Date.now();
      const from = slot.rebuiltRows;
      let lastCheckpoint = Date.now();
      while (slot.rebuiltRows < g.rows && slot.state === 'rebuilding' && !state.stop && !opts.signal?.aborted) {
        const r0 = slot.rebuiltRows;
        const r1 = Math.min(g.rows, r0 + step);
        // A retry after the rebuilt member itself failed has nothing left to do.
        await this.retrying('write', r0 * g.chunk, (r1 - r0) * g.chunk, () =>
          slot.state === 'rebuilding' ? this.rowsIntending(r0, r1, () => this.engine.rebuild(role, r0, r1)) : Promise.resolve(),
        );
        if (slot.state !== 'rebuilding') break;
        slot.rebuiltRows = r1;
        state.progress = {
          role,
          device: slot.dev?.name ?? '',
          rowsDone: r1,
          rows: g.rows,
          bytesDone: r1 * g.chunk,
          bytesTotal: g.rows * g.chunk,
          fraction: r1 / g.rows,
        };
        opts.onProgress?.(state.progress);
        if (Date.now() - lastCheckpoint >= (opts.checkpointMs ?? 1000)) {
          // The checkpoint is only as good as the rows under it: make them durable first.
          await slot.dev!.flush();
          await this.persist();
          lastCheckpoint = Date.now();
        }
        // Let foreground requests in between steps even when no rate limit applies.
        await new Promise((r) => setImmediate(r));
        if (rate > 0) {
          const ahead = ((r1 - from) * g.chunk) / rate - (Date.now() - started) / 1000;
          if (ahead > 0) await new Promise((r) => setTimeout(r, ahead * 1000));
        }
      }
      if (slot.state !== 'rebuilding') continue;
      await slot.dev!.flush();
      if (opts.signal?.aborted && slot.rebuiltRows < g.rows) {
        await this.persist();
        throw opts.signal.reason instanceof Error ? opts.signal.reason : new Error('rebuild cancelled');
      }
      let replaced: BlockDevice | undefined;
      if (slot.rebuiltRows >= g.rows) {
        slot.state = 'active';
        slot.rebuiltRows = 0;
        replaced = slot.source;
        slot.source = undefined;
        this.event(`member ${role} (${slot.dev?.name}) rebuilt${replaced ? `; ${replaced.name} released` : ''}`);
      }
      await this.persist();
      // Released once the array's superblocks no longer list it, so a crash between leaves it merely stale.
      if (replaced) await releaseMember(replaced, this.events);
    }
  }

  private makeRedundancy(): Redundancy {
    return {
      mirrored: this.level.kind === 'mirror',
      copies: (offset, length) => {
        checkRange(this, 'read', offset, length);
        return this.engine.copies(offset, length);
      },
      readCopy: async (buf, offset, copy) => {
        this.checkOpen('read');
        checkRange(this, 'read', offset, buf.length);
        try {
          await this.engine.readCopy(buf, offset, copy);
        } catch (err) {
          if (err instanceof MemberLost) throw new BlockDeviceError('EIO', this.name, 'read', `copy ${copy}: member ${err.member} failed`, offset, buf.length, err.cause);
          throw err;
        }
      },
      repair: async (good, offset, opts) => {
        if (this.readOnly || opts?.defer) return this.deferRepair(good, offset);
        this.checkOpen('write');
        checkWritable(this, 'write', offset, good.length);
        checkRange(this, 'write', offset, good.length);
        const fixed = await this.intending(offset, good.length, () => this.retrying('write', offset, good.length, () => this.engine.repair(good, offset)));
        this.counters.repairs += fixed.size;
        if (fixed.size) this.event(`repaired ${good.length} bytes at ${offset} on member(s) ${[...fixed].join(', ')}`);
        return fixed.size;
      },
    };
  }

  /** A read-only open may not write: note which members differ from the verified data, for a later read-write open. */
  private async deferRepair(good: Uint8Array, offset: number): Promise<number> {
    this.checkOpen('read');
    checkRange(this, 'read', offset, good.length);
    const differ = await this.retrying('read', offset, good.length, () => this.engine.repair(good, offset, true));
    if (differ.size > 0) {
      const members = [...differ].sort((a, b) => a - b);
      // One line per open, not one per block: a zeroed stretch of a member is thousands of them.
      if (this.pending.add({ offset, length: good.length, members }) && !this.toldPending) {
        this.toldPending = true;
        this.event(`a bad copy at ${offset} (member(s) ${members.join(', ')}) was read from the redundancy; its repair, and any more like it, is pending (open read-only; raid status counts them)`);
      }
    }
    return 0;
  }

  private event(message: string): void {
    this.opts.onEvent?.(`${this.name}: ${message}`);
  }

  private checkOpen(op: BlockOp): void {
    if (this.closed) throw new BlockDeviceError('ECLOSED', this.name, op, 'array is closed');
  }
}
