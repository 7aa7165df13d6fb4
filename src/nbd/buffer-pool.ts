/**
 * Reusable I/O buffers in power-of-two size classes, carved from 64 MiB slabs.
 *
 * Reuse matters: a fresh 1 MiB Buffer pays page faults on first touch, and
 * reusing reply and payload buffers was worth +50% on 1 MiB reads here
 * (measured with bench/nbd). Slabs matter for giving memory back: glibc serves a 1 MiB
 * malloc from its heap once it has freed one such block (its mmap threshold
 * rises with every freed mmap, up to 32 MiB), and a heap fragmented by long
 * lived small blocks is never returned to the system: 2 GiB of reply buffers
 * stayed resident after the clients that caused them had gone. A block above
 * 32 MiB is always its own mapping, unmapped when freed. So every pooled
 * buffer is a view into a 64 MiB slab dedicated to one size class (the
 * first of a class is smaller, below), and a slab
 * whose blocks are all back is dropped (one spare per class is kept while
 * connections are open; trim() drops the spares too). A dropped slab is
 * unmapped once V8 collects it, which `onRelease` may hurry.
 */
const MIN_CLASS = 4096;
export const SLAB_BYTES = 64 * 1024 * 1024;
/**
 * A class's first slab is smaller: V8 counts a slab's whole length against
 * its heap limits, and with a 64 MiB slab behind 4 KiB reads it ran a full
 * collection every few megabytes of traffic (35 in a run of 190k reads where
 * there had been none; about +6% CPU per read). One 4 MiB slab holds a
 * thousand 4 KiB buffers; a class that needs more gets slabs of twice the
 * size of its last, up to 64 MiB.
 * The small ones may come from glibc's heap and stay there, a few MiB at most.
 */
export const FIRST_SLAB_BYTES = 4 * 1024 * 1024;
/**
 * Bytes kept free in front of every block, so that a reply header can be
 * written just before the data read into the block and header and data go
 * to the socket as one buffer (one write, no gathering of pieces). 64 keeps
 * blocks on cache-line boundaries.
 */
export const HEADROOM = 64;

/**
 * One size class's blocks. Views are made as blocks are first needed and
 * reused after: a slab of 4 KiB blocks made all its 16384 views up front,
 * and that many long-lived objects made V8 run a full collection every few
 * megabytes of traffic (+25% CPU per 4 KiB read, measured).
 */
class Slab {
  readonly free: Buffer[] = [];
  used = 0;
  readonly blocks: number;
  readonly memory: Buffer;
  /** Bytes from here on have never been handed out. */
  private untouched = 0;
  constructor(
    /** Bytes the slab's blocks add up to (headroom not counted). */
    bytes: number,
    readonly size: number,
  ) {
    this.blocks = Math.max(1, Math.floor(bytes / size));
    this.memory = Buffer.allocUnsafeSlow(this.blocks * (size + HEADROOM));
  }

  get full(): boolean {
    return this.free.length === 0 && this.untouched >= this.memory.length;
  }

  take(): Buffer {
    this.used++;
    const reused = this.free.pop();
    if (reused) return reused;
    const at = this.untouched + HEADROOM;
    this.untouched += HEADROOM + this.size;
    return this.memory.subarray(at, at + this.size);
  }
}

export interface BufferPoolStats {
  /** Bytes of slabs held (in use or spare). */
  slabBytes: number;
  slabs: number;
  /** Bytes of blocks handed out and not yet given back. */
  inUseBytes: number;
}

export class BufferPool {
  /** Per size class: slabs with a free block, the last one first in line. */
  private readonly partial = new Map<number, Slab[]>();
  private readonly slabs = new Map<ArrayBufferLike, Slab>();
  private inUse = 0;

  /** `onRelease` runs after slabs were dropped, to have their memory collected. */
  constructor(private readonly onRelease: () => void = () => undefined) {}

  /** A buffer of at least `length` bytes (at most 32 MiB); give back the same object with give(). */
  take(length: number): Buffer {
    const size = classOf(length);
    let list = this.partial.get(size);
    if (!list) this.partial.set(size, (list = []));
    let slab = list[list.length - 1];
    if (!slab) {
      let held = 0;
      for (const other of this.slabs.values()) if (other.size === size) held++;
      // Each further slab of a class doubles, up to SLAB_BYTES: four 1 MiB reads in flight plus a
      // reply still being sent need a fifth buffer, and that alone must not cost a 64 MiB slab
      // that the spare rule then keeps for the connection's lifetime.
      slab = new Slab(Math.min(SLAB_BYTES, FIRST_SLAB_BYTES * 2 ** held), size);
      this.slabs.set(slab.memory.buffer, slab);
      list.push(slab);
    }
    const buf = slab.take();
    this.inUse += size;
    if (slab.full) list.pop();
    return buf;
  }

  /** Takes back a buffer from take(); anything else is ignored. */
  give(buf: Buffer): void {
    const slab = this.slabs.get(buf.buffer);
    if (!slab || buf.length !== slab.size || slab.used === 0) return;
    slab.free.push(buf);
    slab.used--;
    this.inUse -= slab.size;
    const list = this.partial.get(slab.size)!;
    // It was full, so out of the line: back in, at the far end so the fuller ones are used first.
    if (slab.used === slab.blocks - 1) list.unshift(slab);
    if (slab.used === 0) {
      // One empty slab is kept as the spare: the larger, or a class that outgrew its first slab would make and drop a 64 MiB one at every peak (measured: a dozen forced collections in 3 s of 1 MiB reads at depth 4).
      const other = list.find((s) => s !== slab && s.used === 0);
      if (other) {
        this.drop(other.memory.length < slab.memory.length ? other : slab);
        this.onRelease();
      }
    }
  }

  /**
   * `buf` (from take(), or a view that starts where it starts) with the
   * `n` bytes of headroom in front of it (n <= HEADROOM): one buffer of
   * header and data.
   */
  withFront(buf: Buffer, n: number): Buffer {
    const slab = this.slabs.get(buf.buffer);
    if (!slab || n > HEADROOM || (buf.byteOffset - slab.memory.byteOffset) % (slab.size + HEADROOM) !== HEADROOM) {
      throw new RangeError('only a pooled buffer has room in front of it');
    }
    return Buffer.from(buf.buffer, buf.byteOffset - n, buf.length + n);
  }

  /** Drops every slab with nothing handed out (the server has no connections left). */
  trim(): void {
    let dropped = false;
    for (const slab of [...this.slabs.values()]) {
      if (slab.used > 0) continue;
      this.drop(slab);
      dropped = true;
    }
    if (dropped) this.onRelease();
  }

  get stats(): BufferPoolStats {
    let slabBytes = 0;
    for (const s of this.slabs.values()) slabBytes += s.memory.length;
    return { slabBytes, slabs: this.slabs.size, inUseBytes: this.inUse };
  }

  private drop(slab: Slab): void {
    this.slabs.delete(slab.memory.buffer);
    const list = this.partial.get(slab.size)!;
    list.splice(list.indexOf(slab), 1);
  }
}

export function classOf(length: number): number {
  if (length <= MIN_CLASS) return MIN_CLASS;
  return 2 ** Math.ceil(Math.log2(length));
}
