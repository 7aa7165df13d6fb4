import { LRUCache } from 'lru-cache';
import { BlockDeviceError, Serializer, type BlockDevice } from '../blockdev/index.js';
import { DoubleWrite } from './doublewrite.js';
import { ChecksumError, PoolError } from './errors.js';
import { Journal, RecordType, transactionSize, type JournalRecord } from './journal.js';
import { BlockType, TRAILER, blockTypeName, sealBlock, verifyBlock } from './metablock.js';

/** A metadata block in memory. */
interface Block {
  cluster: number;
  buf: Buffer;
  type: BlockType;
  owner: number;
  /** Bumped on every change; a checkpoint cleans only blocks it captured at this version. */
  version: number;
  /** Created since the last checkpoint: the journal must INIT it before any delta. */
  needsInit: boolean;
  /** Byte ranges changed since the last commit. */
  ranges: Array<[number, number]>;
  /** Kept in memory for the pool's lifetime (allocation bitmap, root). */
  pinned: boolean;
  /** The journal generation whose log holds this block's INIT, if any: replay rebuilds it whole, without its home copy. */
  initGeneration?: bigint;
}

/** Work a commit or checkpoint does at capture time and once it is done, for the layers that own clusters. */
export interface EpochHooks {
  /** Called once a commit has closed the write gate, before it captures: a write that metadata already points at and that failed earlier is retried here (a failure fails the commit). */
  beforeCommit?(): Promise<void>;
  /** Called synchronously when a commit captures state: data written in place until now is about to be referenced durably. */
  onCapture(): void;
  /** Called once the transaction of a commit is durable. */
  onCommitted?(): Promise<void>;
  /** Called after a checkpoint reset the journal: frees captured before it may now be reused and punched. */
  onCheckpoint(): Promise<void>;
  /** After a capture: true when this layer wants a checkpoint now (for example, to hand freed space back). */
  wantsCheckpoint?(): boolean;
}

export interface MetaStoreOptions {
  cacheBytes: number;
  journalStart: number;
  journalBytes: number;
  dwStart: number;
  dwClusters: number;
  /** Most L2 tables under intent at once (bounds what recovery must re-read). */
  maxIntents: number;
  /** A read-only open: a bad copy found on read is recorded as a pending repair, never rewritten. */
  readOnly?: boolean;
}

/**
 * Metadata blocks between memory and the device, and the rules that make them
 * crash-safe: every change is journaled at the next commit (a client flush or
 * FUA, or when enough has piled up), and written home only by a checkpoint,
 * through the double-write area. Clean blocks live in an LRU bounded by a byte
 * budget; changed blocks stay in memory until the checkpoint that writes them
 * home, and a checkpoint runs before they exceed half the budget.
 *
 * Data that is referenced durably may be overwritten in place only under a
 * durable intent for its L2 table: a torn overwrite would otherwise leave a
 * sub-cluster matching neither its old nor its new checksum. Recovery
 * recomputes the checksums of every allocated sub-cluster under the intents of
 * the replayed journal, adopting whatever each sector holds (old or new). A
 * checkpoint ends all intents; their number is bounded so that recovery reads
 * a bounded amount of data. Past the bound, a commit that grants new intents
 * ends the least recently used ones (INTENT_END records) instead: random
 * overwrites over more tables than the bound then cost a shared commit per
 * batch of new tables, never a checkpoint each.
 */
export class MetaStore {
  readonly clusterSize: number;
  readonly journal: Journal;
  private readonly dw: DoubleWrite;
  private readonly clean: LRUCache<number, Block>;
  private readonly dirty = new Map<number, Block>();
  private readonly pinned = new Map<number, Block>();
  private readonly loading = new Map<number, Promise<Block>>();
  private readonly changed = new Set<Block>();
  /** L2 tables under a durable intent in the current journal generation. */
  private readonly intents = new Set<number>();
  /** L2 tables whose intent goes into the next transaction, and the commit that will carry it. */
  private intentsWanted = new Set<number>();
  private nextGrant: Promise<void> | undefined;
  /** L2 tables whose intent a running commit carries, and when it is done. */
  private granting = new Set<number>();
  private grantingDone: Promise<void> = Promise.resolve();
  private readonly maxIntents: number;
  private pendingBytes = 0;
  private readonly maxDirty: number;
  private readonly serial = new Serializer();
  private inflight = 0;
  private draining: { gate: Promise<void>; open: () => void; drained: () => void } | undefined;
  private hooks: EpochHooks[] = [];
  /** The commit relieve() started without waiting for it, if it is still running. */
  private background: Promise<void> | undefined;
  /**
   * Records captured by commits that failed before they were durable: the
   * next commit carries them first, so no later transaction can make durable
   * a reference to something only they describe (a block's INIT, a delta).
   */
  private carried: JournalRecord[] = [];
  /** A checkpoint wrote its blocks home but not the new journal header: the next commit writes it first. */
  private resetPending: bigint | undefined;
  /** Set once a device flush has failed: what was written since the last good flush is of unknown durability. */
  private fenced: Error | undefined;
  /** Counts of checksum failures repaired from redundancy below. */
  repairedBlocks = 0;
  /** Checkpoints that failed after their commit was durable (the commit still succeeded). */
  failedCheckpoints = 0;
  /** Why the last checkpoint failed, until one succeeds. */
  private checkpointError: Error | undefined;
  /** Home blocks that journal replay found damaged, and why: their journaled changes were not applied. */
  readonly replaySkipped = new Map<number, string>();
  /** Metadata blocks read from a good copy while read-only, by device offset (→ which block): their repair waits (check reports them). */
  readonly pendingRepairs = new Map<number, string>();
  private readonly readOnly: boolean;

  constructor(
    readonly dev: BlockDevice,
    clusterSize: number,
    opts: MetaStoreOptions,
  ) {
    this.clusterSize = clusterSize;
    this.journal = new Journal(dev, opts.journalStart, opts.journalBytes);
    this.dw = new DoubleWrite(dev, opts.dwStart, opts.dwClusters, clusterSize);
    const budgetBlocks = Math.max(8, Math.floor(opts.cacheBytes / clusterSize));
    this.maxDirty = Math.max(4, Math.min(this.dw.capacity, Math.floor(budgetBlocks / 2)));
    this.clean = new LRUCache<number, Block>({ max: Math.max(4, budgetBlocks - this.maxDirty) });
    this.maxIntents = opts.maxIntents;
    this.readOnly = opts.readOnly ?? false;
  }

  addHooks(h: EpochHooks): void {
    this.hooks.push(h);
  }

  // ---- blocks ------------------------------------------------------------

  /** The block if it is in memory now (synchronous; the hot path). */
  peek(cluster: number): Buffer | undefined {
    return (this.dirty.get(cluster) ?? this.pinned.get(cluster) ?? this.clean.get(cluster))?.buf;
  }

  /** Loads a block (verifying it) unless it is in memory. */
  async load(cluster: number, type: BlockType, owner: number | undefined, pin = false): Promise<Buffer> {
    const have = this.dirty.get(cluster) ?? this.pinned.get(cluster) ?? this.clean.get(cluster);
    if (have) {
      if (pin) this.pin(have);
      return have.buf;
    }
    let p = this.loading.get(cluster);
    if (!p) {
      p = this.readBlock(cluster, type, owner).finally(() => this.loading.delete(cluster));
      this.loading.set(cluster, p);
    }
    const block = await p;
    // Another caller may have changed and re-homed it meanwhile: one instance per block.
    const now = this.dirty.get(cluster) ?? this.pinned.get(cluster) ?? this.clean.get(cluster);
    if (now) {
      if (pin) this.pin(now);
      return now.buf;
    }
    block.pinned = pin;
    if (pin) this.pinned.set(cluster, block);
    else this.clean.set(cluster, block);
    return block.buf;
  }

  private pin(block: Block): void {
    block.pinned = true;
    if (this.clean.get(block.cluster) === block) {
      this.clean.delete(block.cluster);
      this.pinned.set(block.cluster, block);
    }
  }

  /** Holds taken on blocks by hold(), per cluster. */
  private readonly holds = new Map<number, number>();

  /**
   * Keeps an in-memory block from being evicted until released: a chain step
   * that needs blocks of several layers at once (more than a small cache
   * holds) must not lose one while it loads another. Undefined when the
   * block is not in memory.
   */
  hold(cluster: number): (() => void) | undefined {
    const block = this.dirty.get(cluster) ?? this.pinned.get(cluster) ?? this.clean.get(cluster);
    if (!block) return undefined;
    const n = this.holds.get(cluster) ?? 0;
    // Pinned for good (the root, the bitmap): nothing to undo.
    if (n === 0 && block.pinned) return () => undefined;
    this.holds.set(cluster, n + 1);
    this.pin(block);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.holds.get(cluster) ?? 1) - 1;
      if (left > 0) return void this.holds.set(cluster, left);
      this.holds.delete(cluster);
      const b = this.dirty.get(cluster) ?? this.pinned.get(cluster);
      if (!b) return;
      b.pinned = false;
      if (this.pinned.get(cluster) === b) {
        this.pinned.delete(cluster);
        this.clean.set(cluster, b);
      }
    };
  }

  /** A new, zeroed block for a freshly allocated cluster. */
  create(cluster: number, type: BlockType, owner: number, pin = false): Buffer {
    const buf = Buffer.alloc(this.clusterSize);
    const t = buf.length - TRAILER;
    buf.writeUInt32LE(type, t);
    buf.writeUInt32LE(owner >>> 0, t + 4);
    const block: Block = { cluster, buf, type, owner, version: 1, needsInit: true, ranges: [], pinned: pin };
    this.clean.delete(cluster);
    this.pinned.delete(cluster);
    this.dirty.set(cluster, block);
    this.changed.add(block);
    this.pendingBytes += 24;
    return buf;
  }

  /**
   * Puts a block in memory as if read from home, without writing it (a
   * read-only pool standing in a verified copy for a damaged block).
   */
  install(cluster: number, buf: Buffer, type: BlockType, owner: number): void {
    this.forget(cluster);
    this.pinned.set(cluster, { cluster, buf, type, owner, version: 0, needsInit: false, ranges: [], pinned: true });
  }

  /** Records that bytes [offset, offset+length) of an in-memory block were changed. Synchronous. */
  markDirty(cluster: number, offset: number, length: number): void {
    let block = this.dirty.get(cluster);
    if (!block) {
      block = this.pinned.get(cluster) ?? this.clean.get(cluster);
      if (!block) throw new Error(`internal: metadata block ${cluster} changed while not in memory`);
      this.clean.delete(cluster);
      this.dirty.set(cluster, block);
    }
    block.version++;
    const last = block.ranges[block.ranges.length - 1];
    if (last && offset <= last[1] && offset + length >= last[0]) {
      last[0] = Math.min(last[0], offset);
      last[1] = Math.max(last[1], offset + length);
    } else {
      block.ranges.push([offset, offset + length]);
    }
    this.changed.add(block);
    this.pendingBytes += length + 16;
  }

  /**
   * Gives an in-memory block a new owner (a table passing to the layer that
   * takes over a merged one). The owner lives in the trailer, which deltas do
   * not carry, so the block is journaled whole again (an INIT with the new
   * owner, then all of it). Synchronous.
   */
  reown(cluster: number, owner: number): void {
    this.markDirty(cluster, 0, 0);
    const block = this.dirty.get(cluster)!;
    block.owner = owner;
    block.buf.writeUInt32LE(owner >>> 0, block.buf.length - TRAILER + 4);
    block.needsInit = true;
    block.ranges = [[0, this.clusterSize - TRAILER]];
    this.pendingBytes += this.clusterSize;
  }

  /** Drops a block from memory when its cluster is freed (its last state is journaled already). */
  forget(cluster: number): void {
    const b = this.dirty.get(cluster) ?? this.pinned.get(cluster) ?? this.clean.get(cluster);
    if (b) this.changed.delete(b);
    this.dirty.delete(cluster);
    this.pinned.delete(cluster);
    this.clean.delete(cluster);
  }

  private async readBlock(cluster: number, type: BlockType, owner: number | undefined): Promise<Block> {
    const buf = Buffer.alloc(this.clusterSize);
    const offset = cluster * this.clusterSize;
    await this.dev.read(buf, offset);
    if (verifyBlock(buf, type, owner) !== null) {
      const good = await this.fromRedundancy(buf, offset, (b) => verifyBlock(b, type, owner) === null);
      if (!good) throw new ChecksumError(this.dev.name, `${blockTypeName(type)} ${cluster}: ${verifyBlock(buf, type, owner)}`, offset);
      if (this.readOnly || this.dev.readOnly) this.pendingRepairs.set(offset, `${blockTypeName(type)} ${cluster}`);
    }
    const t = buf.length - TRAILER;
    return { cluster, buf, type, owner: buf.readUInt32LE(t + 4), version: 0, needsInit: false, ranges: [], pinned: false };
  }

  /**
   * Tries every other copy the device below offers; on success fills `buf`,
   * repairs the bad copy (read-only, or with `defer`: has the device below
   * record the repair as pending) and returns true.
   */
  async fromRedundancy(buf: Buffer, offset: number, ok: (b: Buffer) => boolean, defer = this.readOnly): Promise<boolean> {
    const r = this.dev.redundancy;
    if (!r) return false;
    const copies = r.copies(offset, buf.length);
    const alt = Buffer.alloc(buf.length);
    for (let c = 1; c < copies; c++) {
      try {
        await r.readCopy(alt, offset, c);
      } catch {
        continue;
      }
      if (ok(alt)) {
        alt.copy(buf);
        if (defer || this.dev.readOnly) {
          await r.repair(alt, offset, { defer: true });
        } else {
          await r.repair(alt, offset);
          this.repairedBlocks++;
        }
        return true;
      }
    }
    return false;
  }

  // ---- intents -------------------------------------------------------------

  /** L2 tables open for in-place overwrites now (never more than maxIntents). */
  get openIntents(): number {
    return this.intents.size;
  }

  /** True when data under this L2 table may be overwritten in place now. Synchronous. */
  hasIntent(l2Cluster: number): boolean {
    // Kept in order of last use: the commit that must end some ends the coldest.
    if (!this.intents.delete(l2Cluster)) return false;
    this.intents.add(l2Cluster);
    return true;
  }

  /**
   * Makes intents for these L2 tables durable (a commit). Call outside the
   * write gate. Each acquisition costs a flush, so it also takes intents for
   * the other L2 tables in memory (the working set), up to half the limit:
   * random writes then pay for one commit, not one per table.
   */
  async acquireIntents(l2Clusters: Iterable<number>): Promise<void> {
    let inFlight = false;
    for (const c of l2Clusters) {
      if (this.intents.has(c)) continue;
      if (this.granting.has(c)) inFlight = true;
      else this.intentsWanted.add(c);
    }
    if (this.intentsWanted.size === 0) {
      if (inFlight) await this.grantingDone;
      return;
    }
    const room = Math.floor(this.maxIntents / 2);
    for (const map of [this.dirty, this.clean] as const) {
      for (const b of map.values()) {
        if (this.intents.size + this.intentsWanted.size >= room) break;
        if (b.type === BlockType.L2 && !this.intents.has(b.cluster) && !this.granting.has(b.cluster)) this.intentsWanted.add(b.cluster);
      }
    }
    // Every caller until the next capture shares one commit.
    this.nextGrant ??= this.commit();
    await this.nextGrant;
  }

  // ---- write gate ----------------------------------------------------------

  /**
   * Data writes whose metadata changes are done synchronously must have landed
   * before a commit captures that metadata. A commit closes the gate, waits
   * for the writes in flight, captures, and reopens it.
   */
  enter(): Promise<void> | undefined {
    if (!this.draining) {
      this.inflight++;
      return undefined;
    }
    return this.draining.gate.then(() => this.enter());
  }

  exit(): void {
    this.inflight--;
    if (this.inflight === 0 && this.draining) this.draining.drained();
  }

  private async drain(): Promise<() => void> {
    let open!: () => void;
    let drained!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const done = new Promise<void>((r) => (drained = r));
    this.draining = { gate, open, drained };
    if (this.inflight > 0) await done;
    return () => {
      this.draining = undefined;
      open();
    };
  }

  // ---- commit and checkpoint -----------------------------------------------

  /** True when enough is pending that the caller should commit before going on. */
  get wantsCommit(): boolean {
    return this.pendingBytes > this.journal.bytes / 4 || this.dirty.size >= this.maxDirty || this.hooks.some((h) => h.wantsCheckpoint?.());
  }

  /**
   * What a data write calls after it has changed metadata. Past half of the
   * bounds wantsCommit keeps, a commit starts in the background and the
   * write goes on: a commit's flush writes every dirty page of the device,
   * and a writer waiting for it would wait seconds under a steady load.
   * Only at the bounds themselves (journal room, dirty blocks in memory) is
   * the commit waited for, so what memory and the journal hold stays bounded
   * as before. What a client is promised does not change: a FLUSH or FUA
   * still commits and waits.
   */
  relieve(): Promise<void> | undefined {
    if (this.wantsCommit) return this.commit();
    if (this.background || (this.pendingBytes <= this.journal.bytes / 8 && this.dirty.size < this.maxDirty / 2)) return undefined;
    // A failure here is met again by the next commit, which carries what this one captured, or by the fence on writes.
    this.background = this.commit()
      .catch(() => undefined)
      .finally(() => (this.background = undefined));
    return undefined;
  }

  /**
   * Throws when the pool must not take new writes: after a failed device
   * flush (the kernel may have dropped what it could not write, and a later
   * flush would report success all the same, so nothing written since the
   * last good flush can be trusted to be on disk), or while metadata that
   * failed to commit fills the journal.
   */
  checkWritable(op: 'write' | 'discard' | 'writeZeroes'): void {
    if (this.fenced) throw this.fenced;
    if (this.carriedBytes() > this.journal.bytes / 2) {
      throw new BlockDeviceError('ENOSPC', this.dev.name, op, 'metadata changes cannot be committed (the last commits failed); free space on the host, then flush');
    }
    // Data writes stop first, so that the journal keeps room for the discards and deletes that free space.
    if (op === 'write' && this.checkpointError && this.journal.used > this.journal.bytes * 0.8) {
      throw new BlockDeviceError('ENOSPC', this.dev.name, op, `the metadata journal is nearly full and checkpoints fail (${this.checkpointError.message}); discard or delete to free space`);
    }
  }

  /** The error every write and commit gets once a device flush has failed, if one has. */
  get fence(): Error | undefined {
    return this.fenced;
  }

  private carriedBytes(): number {
    return this.carried.length === 0 ? 0 : transactionSize(this.carried);
  }

  private async flushDevice(): Promise<void> {
    try {
      await this.dev.flush();
    } catch (err) {
      this.fenced ??= new BlockDeviceError('EIO', this.dev.name, 'flush', `a flush of the pool's device failed (${err instanceof Error ? err.message : String(err)}); the pool takes no more writes until it is opened again`);
      throw err;
    }
  }

  /**
   * Runs `fn` with the write gate closed and no commit running: no write
   * changes metadata or data meanwhile (reads go on). For an online check.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    let out!: T;
    return this.serialize(async () => {
      const reopen = await this.drain();
      try {
        out = await fn();
      } finally {
        reopen();
      }
    }).then(() => out);
  }

  /** Makes everything written so far durable (a client flush). */
  commit(): Promise<void> {
    return this.serialize(() => this.commitLocked(false));
  }

  /** Commits, then writes every changed block home and empties the journal. */
  checkpoint(): Promise<void> {
    return this.serialize(() => this.commitLocked(true));
  }

  private serialize(fn: () => Promise<void>): Promise<void> {
    return this.serial.run(fn);
  }

  private async commitLocked(forceCheckpoint: boolean): Promise<void> {
    if (this.fenced) throw this.fenced;
    if (this.resetPending !== undefined) {
      await this.journal.reset(this.resetPending);
      this.resetPending = undefined;
    }
    const reopen = await this.drain();
    try {
      for (const h of this.hooks) await h.beforeCommit?.();
    } catch (err) {
      reopen();
      throw err;
    }
    const granted = this.intentsWanted;
    this.intentsWanted = new Set();
    this.nextGrant = undefined;
    let grantDone!: () => void;
    this.granting = granted;
    this.grantingDone = new Promise((r) => (grantDone = r));
    try {
      await this.commitCaptured(granted, forceCheckpoint, reopen);
    } finally {
      this.granting = new Set();
      grantDone();
    }
  }

  private async commitCaptured(granted: Set<number>, forceCheckpoint: boolean, reopen: () => void): Promise<void> {
    let records: JournalRecord[];
    let images: Array<{ block: Block; version: number; image: Buffer }> | undefined;
    let prior: number[] = [];
    try {
      records = this.captureRecords();
      this.boundIntents(granted, records);
      // What earlier failed commits captured goes first: records are images, so later ones win.
      if (this.carried.length > 0) records = this.carried.concat(records);
      this.carried = records;
      for (const h of this.hooks) h.onCapture();
      const needCheckpoint =
        forceCheckpoint ||
        this.hooks.some((h) => h.wantsCheckpoint?.()) ||
        this.dirty.size >= this.maxDirty ||
        this.journal.used + transactionSize(records) > this.journal.bytes * 0.6;
      if (needCheckpoint) {
        images = [...this.dirty.values()].map((block) => {
          const image = Buffer.from(block.buf);
          sealBlock(image, block.type, block.owner);
          return { block, version: block.version, image };
        });
        // From this capture on, in-place writes need an intent of the next generation.
        prior = [...this.intents];
        this.intents.clear();
      }
    } finally {
      reopen();
    }
    // Data written in place before the capture must be durable before metadata points at it.
    await this.flushDevice();
    if (records.length > 0) {
      if (transactionSize(records) > this.journal.free) throw new PoolError('ENOSPC', `${this.dev.name}: metadata journal overflow (${transactionSize(records)} bytes pending)`);
      await this.journal.append(records);
      await this.flushDevice();
    }
    this.carried = [];
    if (!images) for (const c of granted) this.intents.add(c);
    for (const h of this.hooks) await h.onCommitted?.();
    if (!images) return;
    try {
      await this.writeHome(images);
    } catch (err) {
      // The commit itself is durable: a checkpoint that could not finish leaves the journal as it is.
      this.checkpointError = err instanceof Error ? err : new Error(String(err));
      // The journal was not reset, so the intents of this generation still hold, these grants included:
      // without them every overwrite would ask for a commit that asks for the checkpoint again.
      if (this.resetPending === undefined) for (const c of [...prior, ...granted]) this.intents.add(c);
      if (forceCheckpoint || this.fenced) throw err;
      this.failedCheckpoints++;
      return;
    }
    this.checkpointError = undefined;
  }

  /**
   * Adds the INTENT records of this commit, first ending the least recently
   * used intents so that at most maxIntents are open once it is durable. Runs
   * under the closed gate: no write is in flight, and a writer that finds its
   * table's intent ended here asks for a new one. Grants past the bound are
   * dropped; their writers ask again.
   */
  private boundIntents(granted: Set<number>, records: JournalRecord[]): void {
    // Tables asked for by writers come first in the set, those added to fill the commit after them.
    for (const c of [...granted].slice(this.maxIntents)) granted.delete(c);
    let excess = this.intents.size + granted.size - this.maxIntents;
    for (const c of this.intents) {
      if (excess <= 0) break;
      this.intents.delete(c);
      records.push({ type: RecordType.IntentEnd, target: c, payload: Buffer.alloc(0) });
      excess--;
    }
    for (const c of granted) records.push({ type: RecordType.Intent, target: c, payload: Buffer.alloc(0) });
  }

  /** Turns every change since the last commit into journal records (synchronously, under the gate). */
  private captureRecords(): JournalRecord[] {
    const records: JournalRecord[] = [];
    const C = this.clusterSize;
    for (const block of this.changed) {
      if (block.needsInit) {
        const p = Buffer.alloc(8);
        p.writeUInt32LE(block.type, 0);
        p.writeUInt32LE(block.owner >>> 0, 4);
        records.push({ type: RecordType.Init, target: block.cluster, payload: p });
        block.needsInit = false;
        block.initGeneration = this.journal.generation;
      }
      for (const [s, e] of block.ranges) {
        records.push({ type: RecordType.Delta, target: block.cluster * C + s, payload: Buffer.from(block.buf.subarray(s, e)) });
      }
      block.ranges = [];
    }
    this.changed.clear();
    this.pendingBytes = 0;
    return records;
  }

  private async writeHome(images: Array<{ block: Block; version: number; image: Buffer }>): Promise<void> {
    const generation = this.journal.generation;
    // A block created in this generation needs no copy in the double-write area: the journal holds
    // its INIT and every change since, so replay rebuilds it whatever a torn home write left.
    const rebuilt = images.filter((x) => x.block.initGeneration === generation);
    const guarded = images.filter((x) => x.block.initGeneration !== generation);
    await this.writeBlocksHome(rebuilt);
    for (let i = 0; i < guarded.length; i += this.dw.capacity) {
      const batch = guarded.slice(i, i + this.dw.capacity);
      await this.dw.write(generation, batch.map((x) => ({ cluster: x.block.cluster, image: x.image })));
      await this.flushDevice();
      try {
        await this.writeBlocksHome(batch);
        // The next batch overwrites the area that can repair these home writes: they must be durable first.
        await this.flushDevice();
      } catch (err) {
        // Their home copies may be torn, and the area that could repair them is rewritten by the next
        // checkpoint: journal each of them whole, so replay never needs its home copy.
        for (const x of batch) this.reinit(x.block);
        throw err;
      }
    }
    if (guarded.length === 0) await this.flushDevice();
    try {
      await this.journal.reset(generation + 1n);
    } catch (err) {
      // The header may or may not have landed: it must be written before anything is appended again.
      this.resetPending = generation + 1n;
      throw err;
    }
    await this.flushDevice();
    for (const { block, version } of images) {
      if (block.version !== version || this.dirty.get(block.cluster) !== block) continue;
      this.dirty.delete(block.cluster);
      if (block.pinned) this.pinned.set(block.cluster, block);
      else this.clean.set(block.cluster, block);
    }
    for (const h of this.hooks) await h.onCheckpoint();
  }

  /** Writes sealed images over their home copies, every write settled before a failure is reported. */
  private async writeBlocksHome(items: ReadonlyArray<{ block: Block; image: Buffer }>): Promise<void> {
    const C = this.clusterSize;
    const results = await Promise.allSettled(items.map((x) => this.dev.write(x.image, x.block.cluster * C)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** Journals a block whole at the next commit (an INIT and one delta of all of it), as if it were new. */
  private reinit(block: Block): void {
    if (this.dirty.get(block.cluster) !== block) return;
    block.needsInit = true;
    block.version++;
    block.ranges = [[0, this.clusterSize - TRAILER]];
    this.changed.add(block);
    this.pendingBytes += this.clusterSize;
  }

  // ---- recovery --------------------------------------------------------------

  /**
   * Replays the journal after an unclean stop: restores torn home blocks from
   * the double-write area of the interrupted checkpoint, applies every
   * committed transaction, adopts the data under every intent (its checksums
   * recomputed from what the device holds), and checkpoints. Returns how many
   * transactions it replayed.
   */
  async recover(adopt: (l2: Buffer) => Promise<void>): Promise<number> {
    const C = this.clusterSize;
    const txns = await this.journal.read();
    const restore = await this.dw.read(this.journal.generation);
    const images = new Map<number, Block>();
    /** Blocks whose home could not be restored (a full host): they live in memory and the journal only. */
    const homeless = new Set<number>();
    for (const e of restore) {
      const home = Buffer.alloc(C);
      await this.dev.read(home, e.cluster * C);
      const t = e.image.length - TRAILER;
      const type = e.image.readUInt32LE(t) as BlockType;
      if (verifyBlock(e.image, type, undefined) !== null) continue;
      if (verifyBlock(home, type, undefined) === null) continue;
      try {
        await this.dev.write(e.image, e.cluster * C);
      } catch (err) {
        if (this.fenced) throw err;
        images.set(e.cluster, { cluster: e.cluster, buf: Buffer.from(e.image), type, owner: e.image.readUInt32LE(t + 4), version: 1, needsInit: false, ranges: [], pinned: false });
        homeless.add(e.cluster);
      }
    }
    if (txns.length === 0 && homeless.size === 0) return 0;
    const intents = new Set<number>();
    // A damaged home block keeps its damage: patching and resealing it would pass corruption off as
    // sound. Its changes are skipped; whoever reads it later gets an error naming it (or, for the
    // bitmap and the root, the pool rebuilds it or takes its copy).
    const imageOf = async (cluster: number): Promise<Block | undefined> => {
      let img = images.get(cluster);
      if (!img) {
        if (this.replaySkipped.has(cluster)) return undefined;
        const buf = Buffer.alloc(C);
        const t = C - TRAILER;
        let why: string | null;
        try {
          await this.dev.read(buf, cluster * C);
          why = verifyBlock(buf, buf.readUInt32LE(t) as BlockType, undefined);
        } catch (err) {
          why = (err as Error).message;
        }
        if (why !== null) {
          this.replaySkipped.set(cluster, why);
          return undefined;
        }
        img = { cluster, buf, type: buf.readUInt32LE(t) as BlockType, owner: buf.readUInt32LE(t + 4), version: 1, needsInit: false, ranges: [], pinned: false };
        images.set(cluster, img);
      }
      return img;
    };
    // A block journaled whole (INIT) later in the log needs nothing from before it, nor its home copy.
    const lastInit = new Map<number, number>();
    let index = 0;
    for (const txn of txns) for (const r of txn) {
      if (r.type === RecordType.Init) lastInit.set(r.target, index);
      index++;
    }
    index = 0;
    for (const txn of txns) {
      for (const r of txn) {
        const at = index++;
        const cluster = r.type === RecordType.Delta ? Math.floor(r.target / C) : r.target;
        if ((r.type === RecordType.Init || r.type === RecordType.Delta) && at < (lastInit.get(cluster) ?? -1)) continue;
        if (r.type === RecordType.Init) {
          const buf = Buffer.alloc(C);
          const t = C - TRAILER;
          buf.writeUInt32LE(r.payload.readUInt32LE(0), t);
          buf.writeUInt32LE(r.payload.readUInt32LE(4), t + 4);
          images.set(r.target, { cluster: r.target, buf, type: r.payload.readUInt32LE(0), owner: r.payload.readUInt32LE(4), version: 1, needsInit: false, ranges: [], pinned: false });
        } else if (r.type === RecordType.Delta) {
          const img = await imageOf(cluster);
          if (img) r.payload.copy(img.buf, r.target - cluster * C);
        } else if (r.type === RecordType.Intent) {
          intents.add(r.target);
        } else if (r.type === RecordType.IntentEnd) {
          intents.delete(r.target);
        } else {
          throw new PoolError('ECORRUPT', `${this.dev.name}: journal record of unknown type ${r.type as number}`);
        }
      }
    }
    for (const c of intents) {
      const img = await imageOf(c);
      // A table freed after its intent is no longer an L2 table of anyone: nothing to adopt.
      if (img?.type === BlockType.L2) await adopt(img.buf);
    }
    for (const b of images.values()) this.dirty.set(b.cluster, b);
    // The double-write area is all that backs these; the checkpoint below rewrites it, so the journal
    // takes them whole first (its commit precedes the area's rewrite).
    for (const c of homeless) {
      const b = images.get(c);
      if (b) this.reinit(b);
    }
    try {
      await this.checkpoint();
    } catch (err) {
      // A host that is full (or a bad sector) must not keep the pool from opening: the journal still
      // holds everything replayed, its intents still hold, and the checkpoint runs again later.
      if (this.fenced) throw err;
    }
    return txns.length;
  }
}
