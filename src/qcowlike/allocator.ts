import { BlockDeviceError } from '../blockdev/index.js';
import type { PoolHeader } from './header.js';
import { BlockType, TRAILER } from './metablock.js';
import type { MetaStore } from './metastore.js';

/** Freed bytes awaiting a checkpoint that make one worth running early. */
const RELEASE_BYTES = 64 * 1024 * 1024;

/**
 * Host clusters, one bit each (1 = in use), in bitmap blocks that stay in
 * memory for the pool's lifetime: 1 bit per cluster is 2 MiB of bitmap for a
 * 1 TiB pool of 64 KiB clusters.
 *
 * Two rules make reuse crash-safe. A cluster allocated since the last commit
 * is "fresh": nothing durable points at it, so data may be written into it in
 * place. A freed cluster is quarantined until the next checkpoint: until then
 * a crash could bring back the metadata (or a journaled write) that still
 * points at it. Only after that checkpoint is it reused and its space handed
 * back to the host (hole punched).
 */
export class Allocator {
  private readonly C: number;
  private readonly bitsPerBlock: number;
  private readonly blocks: Buffer[] = [];
  private hint: number;
  private used = 0;
  private readonly fresh = new Set<number>();
  private quarantine = new Set<number>();
  private captured = new Set<number>();

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
        for (const c of this.quarantine) this.captured.add(c);
        this.quarantine = new Set();
      },
      onCheckpoint: () => this.release(),
      // Hand freed space back to the host once a fair amount has piled up, not only when the journal fills.
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

  async load(): Promise<void> {
    for (let i = 0; i < this.header.bitmapBlocks; i++) this.blocks.push(await this.store.load(this.header.bitmapStart + i, BlockType.Bitmap, i, true));
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

  /** `count` contiguous free clusters (L1 tables, the catalog); returns the first. Synchronous. */
  allocateRun(count: number): number {
    const total = this.header.totalClusters;
    const start = this.findRun(this.hint, total, count) ?? this.findRun(this.header.dataStart, this.hint, count);
    if (start === undefined) {
      throw new BlockDeviceError('ENOSPC', this.store.dev.name, 'write', `pool is full: no ${count === 1 ? 'free cluster' : `${count} contiguous free clusters`} left (${this.freeClusters} free of ${total})`);
    }
    for (let c = start; c < start + count; c++) {
      this.setBit(c, true);
      this.fresh.add(c);
    }
    this.used += count;
    this.hint = start + count;
    return start;
  }

  /** Frees a cluster; it becomes reusable after the next checkpoint. Synchronous. */
  free(cluster: number): void {
    if (!this.isUsed(cluster)) throw new Error(`internal: double free of cluster ${cluster}`);
    this.setBit(cluster, false);
    this.used--;
    // Even a fresh cluster waits: a journaled write may still target it until the next checkpoint.
    this.fresh.delete(cluster);
    this.quarantine.add(cluster);
  }

  /**
   * True when freed clusters should be released by a checkpoint now: a fair
   * amount has piled up, or they are a large share of what is left, so that a
   * nearly full pool does not report ENOSPC while space waits in quarantine.
   */
  get waiting(): number {
    return this.captured.size + this.quarantine.size;
  }

  wantsRelease(): boolean {
    const waiting = this.waiting;
    if (waiting === 0) return false;
    return waiting * this.C >= RELEASE_BYTES || waiting >= (this.freeClusters - waiting) / 4;
  }

  /** Sets a bit without the usual bookkeeping (check --repair). */
  repairBit(cluster: number, used: boolean): void {
    if (this.isUsed(cluster) === used) return;
    this.setBit(cluster, used);
    this.used += used ? 1 : -1;
  }

  private findRun(from: number, to: number, count: number): number | undefined {
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
      if (this.isUsed(c) || this.quarantine.has(c) || this.captured.has(c)) {
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

  /** After a checkpoint: quarantined clusters become reusable and their space goes back to the host. */
  private async release(): Promise<void> {
    const freed = [...this.captured].sort((a, b) => a - b);
    this.captured = new Set();
    let i = 0;
    while (i < freed.length) {
      let j = i;
      while (j + 1 < freed.length && freed[j + 1] === freed[j]! + 1) j++;
      const start = freed[i]!;
      const len = freed[j]! - start + 1;
      i = j + 1;
      // Handing space back is best effort: a device that cannot discard keeps the old bytes, which nothing references.
      await this.store.dev.discard(start * this.C, len * this.C).catch(() => undefined);
    }
  }
}
