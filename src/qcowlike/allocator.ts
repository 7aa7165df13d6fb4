import { BlockDeviceError } from '../blockdev/index.js';
import type { PoolHeader } from './header.js';
import { BlockType, TRAILER } from './metablock.js';
import type { MetaStore } from './metastore.js';

/**
 * Freed bytes waiting for release that make an early commit worth its flush.
 * Releasing costs a flush of everything written since, so it waits until the
 * amount is large or free space runs short.
 */
const RELEASE_BYTES = 1024 * 1024 * 1024;

/** How a freed cluster is handed back. */
export interface FreeOptions {
  /** It held metadata: journal deltas may still be replayed onto it until the next checkpoint. */
  metadata?: boolean;
  /** Give its space back to the host (discard/trim), not only to the pool (rewrites). */
  punch?: boolean;
}

/**
 * Host clusters, one bit each (1 = in use), in bitmap blocks that stay in
 * memory for the pool's lifetime: 1 bit per cluster is 2 MiB of bitmap for a
 * 1 TiB pool of 64 KiB clusters.
 *
 * Rules that make reuse crash-safe. A cluster allocated since the last commit
 * is "fresh": nothing durable points at it, so data may be written into it in
 * place. A freed cluster is not handed out again until the commit that freed
 * it is durable (before that a crash brings back the map that points at it);
 * a metadata cluster, which journal deltas may still be replayed onto, waits
 * for the next checkpoint. Space is punched
 * back to the host before the cluster becomes allocatable again.
 */
export class Allocator {
  private readonly C: number;
  private readonly bitsPerBlock: number;
  private readonly blocks: Buffer[] = [];
  private hint: number;
  private used = 0;
  private readonly fresh = new Set<number>();
  /**
   * Clusters that only the catalog may take: a full pool must still be able
   * to write the catalog that deletes a volume (set by the pool to the
   * catalog's size plus one).
   */
  catalogReserve = 0;
  /** Freed since the last capture. */
  private pending = new Map<number, FreeOptions>();
  /** Freed before the capture of the commit now running. */
  private committing = new Map<number, FreeOptions>();
  /** Waiting for the next checkpoint. */
  private captured = new Map<number, FreeOptions>();
  /** Being punched; allocatable once done. */
  private readonly punching = new Set<number>();

  constructor(
    private readonly store: MetaStore,
    private readonly header: PoolHeader,
  ) {
    this.C = header.clusterSize;
    this.bitsPerBlock = (this.C - TRAILER) * 8;
    this.hint = header.dataStart;
    store.addHooks({
      onCapture: () => {
        this.fresh.clear();
        for (const [c, o] of this.pending) this.committing.set(c, o);
        this.pending = new Map();
      },
      onCommitted: () => {
        const now: Array<[number, FreeOptions]> = [];
        for (const [c, o] of this.committing) {
          if (o.metadata) this.captured.set(c, o);
          else now.push([c, o]);
        }
        this.committing = new Map();
        return this.release(now);
      },
      onCheckpoint: () => {
        const all = [...this.captured];
        this.captured = new Map();
        return this.release(all);
      },
      wantsCheckpoint: () => this.wantsRelease(),
    });
  }
  /** Formats the bitmap of a new pool: the reserved regions in use, all else free. */
  format(): void {
    for (let i = 0; i < this.header.bitmapBlocks; i++) this.blocks.push(this.store.create(this.header.bitmapStart + i, BlockType.Bitmap, i, true));
    for (let c = 0; c < this.header.dataStart; c++) this.setBit(c, true);
    // Clusters past the end of the device do not exist: mark them used so they are never handed out.
    for (let c = this.header.totalClusters; c < this.header.bitmapBlocks * this.bitsPerBlock; c++) this.setBit(c, true);
    this.used = this.header.dataStart;
  }

  /**
   * Loads the bitmap. A block that fails to load is handed to `onDamaged`,
   * which returns the block to use in its place (rebuilt from the maps);
   * without it, the failure is thrown.
   */
  async load(onDamaged?: (index: number, err: unknown) => Promise<Buffer>): Promise<void> {
    for (let i = 0; i < this.header.bitmapBlocks; i++) {
      try {
        this.blocks.push(await this.store.load(this.header.bitmapStart + i, BlockType.Bitmap, i, true));
      } catch (err) {
        if (!onDamaged) throw err;
        this.blocks.push(await onDamaged(i, err));
      }
    }
    this.used = 0;
    for (let c = 0; c < this.header.totalClusters; c++) if (this.isUsed(c)) this.used++;
  }

  get usedClusters(): number {
    return this.used;
  }

  get freeClusters(): number {
    return this.header.totalClusters - this.used;
  }

  isUsed(cluster: number): boolean {
    const b = this.blocks[Math.floor(cluster / this.bitsPerBlock)]!;
    const bit = cluster % this.bitsPerBlock;
    return (b[bit >> 3]! & (1 << (bit & 7))) !== 0;
  }

  isFresh(cluster: number): boolean {
    return this.fresh.has(cluster);
  }

  /** One free cluster, next-fit so that consecutive allocations are contiguous. Synchronous. */
  allocate(): number {
    return this.allocateRun(1);
  }

  /**
   * `count` contiguous free clusters (L1 tables, the catalog); returns the
   * first. Only the catalog may take the last `catalogReserve` clusters.
   * Synchronous.
   */
  allocateRun(count: number, opts: { catalog?: boolean } = {}): number {
    const total = this.header.totalClusters;
    const reserve = opts.catalog ? 0 : this.catalogReserve;
    const keep = opts.catalog ? undefined : this.catalogSpares;
    const start = this.freeClusters - this.waiting - count < reserve ? undefined : (this.findRun(this.hint, total, count, keep) ?? this.findRun(this.header.dataStart, this.hint, count, keep));
    if (start === undefined) {
      const kept = reserve > 0 ? `, ${reserve} kept so that the catalog can always be rewritten` : '';
      throw new BlockDeviceError('ENOSPC', this.store.dev.name, 'write', `pool is full: no ${count === 1 ? 'free cluster' : `${count} contiguous free clusters`} left (${this.freeClusters} free of ${total}${kept})`);
    }
    for (let c = start; c < start + count; c++) {
      this.setBit(c, true);
      this.fresh.add(c);
    }
    this.used += count;
    this.hint = start + count;
    return start;
  }

  /**
   * Takes exactly [start, start+count) if all of it is free and allocatable
   * now; false otherwise. Synchronous.
   */
  allocateAt(start: number, count: number): boolean {
    if (start < this.header.dataStart || start + count > this.header.totalClusters) return false;
    for (let c = start; c < start + count; c++) if (this.isUsed(c) || this.isWaiting(c)) return false;
    for (let c = start; c < start + count; c++) {
      this.setBit(c, true);
      this.fresh.add(c);
    }
    this.used += count;
    return true;
  }

  /** Frees a cluster; it becomes reusable once that is durable (see the class comment). Synchronous. */
  free(cluster: number, opts: FreeOptions = {}): void {
    if (!this.isUsed(cluster)) throw new Error(`internal: double free of cluster ${cluster}`);
    this.setBit(cluster, false);
    this.used--;
    this.fresh.delete(cluster);
    this.pending.set(cluster, opts);
  }

  /** Freed clusters not yet allocatable. */
  get waiting(): number {
    return this.pending.size + this.committing.size + this.captured.size + this.punching.size;
  }

  /**
   * True when freed clusters should be released now: a fair amount has piled
   * up, or they are a large share of what is left, so that a nearly full pool
   * does not report ENOSPC while space waits to become reusable.
   */
  wantsRelease(): boolean {
    const waiting = this.waiting;
    if (waiting === 0) return false;
    return waiting * this.C >= RELEASE_BYTES || waiting >= (this.freeClusters - waiting) / 4;
  }

  /** Clusters the bitmap has bits for: how far the pool can grow without a bigger bitmap. */
  get capacity(): number {
    return this.header.bitmapBlocks * this.bitsPerBlock;
  }

  /**
   * Clears the bits of [from, to), clusters past the pool's end (format sets
   * them so that they are never handed out), ahead of a growth that brings
   * them in. Under the old size they stay past the end, so clearing them
   * early is harmless. Synchronous.
   */
  clearPastEnd(from: number, to: number): void {
    if (from < this.header.totalClusters || to > this.capacity) throw new Error(`internal: clusters ${from}-${to} are not past the end`);
    for (let c = from; c < to; c++) if (this.isUsed(c)) this.setBit(c, false);
  }

  /** Sets a bit without the usual bookkeeping (check --repair). */
  repairBit(cluster: number, used: boolean): void {
    if (this.isUsed(cluster) === used) return;
    this.setBit(cluster, used);
    this.used += used ? 1 : -1;
  }

  /**
   * Clusters the last catalog rewrite left: free, but handed out to the
   * catalog only. They were written and never punched, so a host file
   * system that is full still backs them, and the catalog of a delete can
   * always be written there.
   */
  private catalogSpares = new Set<number>();

  /** Sets the catalog's spare runs (replacing the previous ones, which go back to general use). Synchronous. */
  setCatalogSpares(runs: ReadonlyArray<{ start: number; clusters: number }>): void {
    this.catalogSpares = new Set();
    for (const r of runs) for (let c = r.start; c < r.start + r.clusters; c++) this.catalogSpares.add(c);
  }

  private findRun(from: number, to: number, count: number, keep?: Set<number>): number | undefined {
    let runStart = from;
    let runLen = 0;
    for (let c = from; c < to; c++) {
      // Skip whole bytes of used bits quickly.
      if (runLen === 0 && (c & 7) === 0) {
        const blk = this.blocks[Math.floor(c / this.bitsPerBlock)]!;
        const bit = c % this.bitsPerBlock;
        if (blk[bit >> 3] === 0xff && c + 8 <= to) {
          c += 7;
          continue;
        }
      }
      if (this.isUsed(c) || this.isWaiting(c) || keep?.has(c)) {
        runLen = 0;
        continue;
      }
      if (runLen === 0) runStart = c;
      if (++runLen === count) return runStart;
    }
    return undefined;
  }

  private setBit(cluster: number, value: boolean): void {
    const index = Math.floor(cluster / this.bitsPerBlock);
    const b = this.blocks[index]!;
    const bit = cluster % this.bitsPerBlock;
    if (value) b[bit >> 3]! |= 1 << (bit & 7);
    else b[bit >> 3]! &= ~(1 << (bit & 7));
    this.store.markDirty(this.header.bitmapStart + index, bit >> 3, 1);
  }

  private isWaiting(c: number): boolean {
    return this.pending.has(c) || this.committing.has(c) || this.captured.has(c) || this.punching.has(c);
  }

  /** Makes clusters allocatable again, punching first those freed by discard so no new data is ever punched away. */
  private async release(clusters: Array<[number, FreeOptions]>): Promise<void> {
    const punch = clusters.filter(([, o]) => o.punch).map(([c]) => c).sort((a, b) => a - b);
    for (const c of punch) this.punching.add(c);
    try {
      let i = 0;
      while (i < punch.length) {
        let j = i;
        while (j + 1 < punch.length && punch[j + 1] === punch[j]! + 1) j++;
        // Best effort: a device that cannot discard keeps the old bytes, which nothing references.
        await this.store.dev.discard(punch[i]! * this.C, (j - i + 1) * this.C).catch(() => undefined);
        i = j + 1;
      }
    } finally {
      for (const c of punch) this.punching.delete(c);
    }
  }
}
