/**
 * Reusable I/O buffers in power-of-two size classes, carved from 64 MiB slabs.
 *
 * Reuse matters: a fresh 1 MiB Buffer pays page faults on first touch, and
 * reusing reply and payload buffers was worth +50% on 1 MiB reads here
 * (PERF-NOTES). Slabs matter for giving memory back: glibc serves a 1 MiB
 * malloc from its heap once it has freed one such block (its mmap threshold
 * rises with every freed mmap, up to 32 MiB), and a heap fragmented by long
 * lived small blocks is never returned to the system: 2 GiB of reply buffers
 * stayed resident after the clients that caused them had gone. A block above
 * 32 MiB is always its own mapping, unmapped when freed. So every pooled
 * buffer is a view into a 64 MiB slab dedicated to one size class, and a slab
 * whose blocks are all back is dropped (one spare per class is kept while
 * connections are open; trim() drops the spares too). A dropped slab is
 * unmapped once V8 collects it, which `onRelease` may hurry.
 */
const MIN_CLASS = 4096;
export const SLAB_BYTES = 64 * 1024 * 1024;

class Slab {
  readonly free: Buffer[] = [];
  used = 0;
  constructor(
    readonly memory: Buffer,
    readonly size: number,
  ) {
    for (let at = memory.length - size; at >= 0; at -= size) this.free.push(memory.subarray(at, at + size));
  }
  get blocks(): number {
    return this.memory.length / this.size;
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
      slab = new Slab(Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, size)), size);
      this.slabs.set(slab.memory.buffer, slab);
      list.push(slab);
    }
    const buf = slab.free.pop()!;
    slab.used++;
    this.inUse += size;
    if (slab.free.length === 0) list.pop();
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
    if (slab.free.length === 1) list.unshift(slab);
    if (slab.used === 0 && list.some((s) => s !== slab && s.used === 0)) {
      this.drop(slab);
      this.onRelease();
    }
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
