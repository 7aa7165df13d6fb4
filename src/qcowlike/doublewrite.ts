import type { BlockDevice } from '../blockdev/index.js';
import { metaChecksum } from './checksum.js';

/**
 * The double-write area. A checkpoint writes whole metadata blocks over their
 * home copies, and a power loss can tear one. So before touching any home
 * block, the checkpoint writes every block it is about to write into this
 * area and flushes; at recovery, a home block that fails its checksum is
 * restored from here when the area belongs to the interrupted checkpoint
 * (same journal generation). Journal deltas then bring it up to date.
 * Layout: cluster 0 holds magic, generation, count, one (cluster, image hash)
 * pair per block and a hash; cluster 1+i holds the image of block i.
 *
 * The head and the images go out in one flush epoch, so the head can survive
 * a power loss that the images do not: a slot may still hold a sealed,
 * self-consistent image of another block from an earlier checkpoint. The
 * image hash in the head tells such a slot apart; without it, recovery would
 * "restore" a home block with the wrong block's image.
 */
const MAGIC = Buffer.from('STRDWBL2', 'latin1');
const HEAD = 24;
const ENTRY = 16;

export interface DoubleWriteEntry {
  cluster: number;
  image: Buffer;
}

export class DoubleWrite {
  /** Most blocks one pass can protect. */
  readonly capacity: number;

  constructor(
    private readonly dev: BlockDevice,
    private readonly startCluster: number,
    clusters: number,
    private readonly clusterSize: number,
  ) {
    this.capacity = Math.min(clusters - 1, Math.floor((clusterSize - HEAD - 8) / ENTRY));
  }

  async write(generation: bigint, entries: readonly DoubleWriteEntry[]): Promise<void> {
    if (entries.length > this.capacity) throw new Error(`internal: ${entries.length} blocks for a double-write area of ${this.capacity}`);
    const C = this.clusterSize;
    const head = Buffer.alloc(C);
    MAGIC.copy(head, 0);
    head.writeBigUInt64LE(generation, 8);
    head.writeUInt32LE(entries.length, 16);
    entries.forEach((e, i) => {
      head.writeBigUInt64LE(BigInt(e.cluster), HEAD + i * ENTRY);
      head.writeBigUInt64LE(metaChecksum(e.image), HEAD + i * ENTRY + 8);
    });
    head.writeBigUInt64LE(metaChecksum(head.subarray(0, C - 8)), C - 8);
    await Promise.all(entries.map((e, i) => this.dev.write(e.image, (this.startCluster + 1 + i) * C)));
    await this.dev.write(head, this.startCluster * C);
  }

  /**
   * Null when the head is sound or was never written (all zeroes), else what
   * is wrong with it. A damaged head only costs the restoring of torn home
   * blocks after a crash in the middle of a checkpoint, but it is damage.
   */
  async headDamage(): Promise<string | null> {
    const C = this.clusterSize;
    const head = Buffer.alloc(C);
    await this.dev.read(head, this.startCluster * C);
    if (head.every((b) => b === 0)) return null;
    if (!head.subarray(0, 7).equals(MAGIC.subarray(0, 7))) return 'no double-write magic';
    if (head.readBigUInt64LE(C - 8) !== metaChecksum(head.subarray(0, C - 8))) return 'checksum mismatch';
    return null;
  }

  /** Empties the area (as in a new pool); only between checkpoints, when nothing needs it. */
  async clear(): Promise<void> {
    await this.dev.write(Buffer.alloc(this.clusterSize), this.startCluster * this.clusterSize);
  }

  /**
   * The entries of the area if its head is intact and of the given
   * generation, each only if its slot holds exactly the image the head
   * names; else none.
   */
  async read(generation: bigint): Promise<DoubleWriteEntry[]> {
    const C = this.clusterSize;
    const head = Buffer.alloc(C);
    await this.dev.read(head, this.startCluster * C);
    if (!head.subarray(0, 8).equals(MAGIC)) return [];
    if (head.readBigUInt64LE(C - 8) !== metaChecksum(head.subarray(0, C - 8))) return [];
    if (head.readBigUInt64LE(8) !== generation) return [];
    const count = Math.min(head.readUInt32LE(16), this.capacity);
    const out: DoubleWriteEntry[] = [];
    for (let i = 0; i < count; i++) {
      const image = Buffer.alloc(C);
      await this.dev.read(image, (this.startCluster + 1 + i) * C);
      if (metaChecksum(image) !== head.readBigUInt64LE(HEAD + i * ENTRY + 8)) continue;
      out.push({ cluster: Number(head.readBigUInt64LE(HEAD + i * ENTRY)), image });
    }
    return out;
  }
}
