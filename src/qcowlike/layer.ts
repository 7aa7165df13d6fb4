import type { CatalogLayer } from './catalog.js';
import type { PoolCore } from './core.js';
import { blockOwner, isInherited, readHost, readL1, setInherited, writeHost, writeL1 } from './geometry.js';
import { ChecksumError } from './errors.js';
import { BlockType } from './metablock.js';
import { RangeLock } from '../blockdev/range-lock.js';

/** Where one virtual cluster's L2 entry is. */
export interface EntryRef {
  l2: Buffer;
  l2Cluster: number;
  /** Byte offset of the entry in the L2 block. */
  at: number;
}

/**
 * One layer's map: virtual cluster → L2 entry, through an L1 table of
 * contiguous blocks. Lookups are split into an asynchronous `ensure` that
 * brings the blocks into memory and a synchronous `peek`, so that a request
 * can decide and change a whole range without yielding in between.
 */
export class Layer {
  readonly lock = new RangeLock();

  constructor(
    public rec: CatalogLayer,
    public parent: Layer | null,
    private readonly core: PoolCore,
  ) {}

  get id(): number {
    return this.rec.id;
  }

  get size(): number {
    return this.rec.size;
  }

  private l1Pos(vc: number): { block: number; index: number; within: number } {
    const g = this.core.geo;
    const l2i = Math.floor(vc / g.entriesPerL2);
    return { block: this.rec.l1Start + Math.floor(l2i / g.entriesPerL1Block), index: l2i % g.entriesPerL1Block, within: vc % g.entriesPerL2 };
  }

  /**
   * Brings the L1 block and (if there is one) the L2 block of `vc` into
   * memory. A block that fails to verify is an EIO that also names the
   * virtual range it maps: that range, and only that, is unreadable.
   */
  async ensure(vc: number): Promise<void> {
    const { store, geo } = this.core;
    const pos = this.l1Pos(vc);
    let l1 = store.peek(pos.block);
    if (!l1) {
      const span = geo.entriesPerL1Block * geo.entriesPerL2 * geo.clusterSize;
      l1 = await store.load(pos.block, BlockType.L1, this.id).catch((err: unknown) => this.mapping(err, pos.block - this.rec.l1Start, span));
    }
    const l2c = readL1(l1, pos.index);
    if (l2c === 0 || store.peek(l2c)) return;
    const index = Math.floor(vc / geo.entriesPerL2);
    const l2 = await store.load(l2c, BlockType.L2, undefined).catch((err: unknown) => this.mapping(err, index, geo.entriesPerL2 * geo.clusterSize));
    // A table may be an ancestor's (shared since a snapshot or a clone), never anyone else's.
    const owner = blockOwner(l2);
    if (!this.descendsFrom(owner)) {
      store.forget(l2c);
      this.mapping(new ChecksumError(store.dev.name, `L2 table block ${l2c}: wrong owner ${owner} (expected layer ${this.id} or one of its ancestors)`, l2c * geo.clusterSize), index, geo.entriesPerL2 * geo.clusterSize);
    }
  }

  /**
   * Brings the L1 block and L2 table of `vc` into memory and holds them
   * there until the returned release is called (see MetaStore.hold).
   */
  async hold(vc: number): Promise<() => void> {
    const { store } = this.core;
    for (;;) {
      await this.ensure(vc);
      const pos = this.l1Pos(vc);
      const l1 = store.hold(pos.block);
      if (!l1) continue;
      const l2c = readL1(store.peek(pos.block)!, pos.index);
      if (l2c === 0) return l1;
      const l2 = store.hold(l2c);
      if (l2) {
        return () => {
          l2();
          l1();
        };
      }
      l1();
    }
  }

  /** True when `id` is this layer or one of its ancestors. */
  descendsFrom(id: number): boolean {
    for (let l: Layer | null = this; l; l = l.parent) if (l.id === id) return true;
    return false;
  }

  /** The table holding the entry is this layer's own (not shared from an ancestor). */
  ownsTable(ref: EntryRef): boolean {
    return blockOwner(ref.l2) === this.id;
  }

  /** The entry's host cluster is this layer's alone: it may be written in place and is freed with the layer. */
  owns(ref: EntryRef): boolean {
    return blockOwner(ref.l2) === this.id && !isInherited(ref.l2, ref.at);
  }

  /**
   * The entry of `vc` in a table of this layer's own, made now if needed: a
   * new table, or a copy of the ancestor's table it shares, every mapped
   * entry in the copy marked inherited (the L1 block and any shared table
   * must be in memory). Synchronous.
   */
  ownEntry(vc: number, ref: EntryRef | null | undefined = this.peek(vc)): EntryRef {
    if (ref === null) return this.createTable(vc);
    if (ref === undefined) throw new Error(`internal: layer ${this.id} table of cluster ${vc} not in memory`);
    if (this.ownsTable(ref)) return ref;
    const { store, alloc, geo } = this.core;
    const pos = this.l1Pos(vc);
    const l2Cluster = alloc.allocate();
    const l2 = store.create(l2Cluster, BlockType.L2, this.id);
    const used = geo.entriesPerL2 * geo.entrySize;
    ref.l2.copy(l2, 0, 0, used);
    for (let at = 0; at < used; at += geo.entrySize) if (readHost(l2, at) !== 0) setInherited(l2, at);
    store.markDirty(l2Cluster, 0, used);
    writeL1(store.peek(pos.block)!, pos.index, l2Cluster);
    store.markDirty(pos.block, pos.index * 8, 8);
    return { l2, l2Cluster, at: ref.at };
  }

  /** The cluster of the L2 table that maps `vc` (0: none); the L1 block must be in memory. */
  tableAt(vc: number): number | undefined {
    const pos = this.l1Pos(vc);
    const l1 = this.core.store.peek(pos.block);
    return l1 ? readL1(l1, pos.index) : undefined;
  }

  private mapping(err: unknown, index: number, span: number): never {
    if (!(err instanceof ChecksumError)) throw err;
    throw new ChecksumError(err.device, `${err.what}, which maps virtual offsets ${index * span}-${(index + 1) * span - 1} of layer ${this.id}`, err.hostOffset);
  }

  /** The entry of `vc`: null when the layer has no L2 table there, undefined when a block is not in memory. */
  peek(vc: number): EntryRef | null | undefined {
    const { store, geo } = this.core;
    const pos = this.l1Pos(vc);
    const l1 = store.peek(pos.block);
    if (!l1) return undefined;
    const l2Cluster = readL1(l1, pos.index);
    if (l2Cluster === 0) return null;
    const l2 = store.peek(l2Cluster);
    if (!l2) return undefined;
    return { l2, l2Cluster, at: pos.within * geo.entrySize };
  }

  /**
   * The entry of `vc`, loading what it needs; for readers, which may go on
   * using the buffer after it leaves the cache (its bytes stay as they were).
   */
  async lookup(vc: number): Promise<EntryRef | null> {
    for (;;) {
      const ref = this.peek(vc);
      if (ref !== undefined) return ref;
      await this.ensure(vc);
    }
  }

  /** Creates the L2 table for `vc` (its L1 block must be in memory). Synchronous. */
  createTable(vc: number): EntryRef {
    const { store, alloc, geo } = this.core;
    const pos = this.l1Pos(vc);
    const l1 = store.peek(pos.block)!;
    const l2Cluster = alloc.allocate();
    const l2 = store.create(l2Cluster, BlockType.L2, this.id);
    writeL1(l1, pos.index, l2Cluster);
    store.markDirty(pos.block, pos.index * 8, 8);
    return { l2, l2Cluster, at: pos.within * geo.entrySize };
  }

  /** Unhooks the L2 table of `vc` from the L1 (its L1 block must be in memory); the caller frees it. Synchronous. */
  clearTable(vc: number): void {
    const pos = this.l1Pos(vc);
    writeL1(this.core.store.peek(pos.block)!, pos.index, 0);
    this.core.store.markDirty(pos.block, pos.index * 8, 8);
  }

  /**
   * Every L2 table of the layer: [index of first virtual cluster it maps, L2
   * cluster]. Walks the whole L1, past the layer's size too, so that nothing
   * a map still points at is missed.
   */
  async *tables(): AsyncGenerator<[number, number]> {
    const { store, geo } = this.core;
    for (let b = 0; b < this.rec.l1Blocks; b++) {
      const l1 = store.peek(this.rec.l1Start + b) ?? (await store.load(this.rec.l1Start + b, BlockType.L1, this.id));
      for (let i = 0; i < geo.entriesPerL1Block; i++) {
        const c = readL1(l1, i);
        if (c !== 0) yield [(b * geo.entriesPerL1Block + i) * geo.entriesPerL2, c];
      }
    }
  }

  /** Sets an entry's host cluster. Synchronous. */
  setHost(ref: EntryRef, cluster: number): void {
    writeHost(ref.l2, ref.at, cluster);
    this.core.store.markDirty(ref.l2Cluster, ref.at, 8);
  }
}
