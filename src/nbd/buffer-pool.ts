/**
 * Reusable I/O buffers in power-of-two size classes. A fresh 1 MiB Buffer pays
 * page faults on first touch; reusing reply and payload buffers was worth +50%
 * on 1 MiB reads here (PERF-NOTES). Retained memory is capped, so an idle
 * server does not hold a burst's worth of buffers.
 */
const MIN_CLASS = 4096;
const MAX_RETAINED_BYTES = 64 * 1024 * 1024;
const MAX_PER_CLASS = 64;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private retained = 0;

  /** A buffer of at least `length` bytes; give back the same object with give(). */
  take(length: number): Buffer {
    const size = classOf(length);
    const list = this.free.get(size);
    const buf = list?.pop();
    if (buf) {
      this.retained -= size;
      return buf;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  give(buf: Buffer): void {
    const size = buf.length;
    if (size !== classOf(size) || this.retained + size > MAX_RETAINED_BYTES) return;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    if (list.length >= MAX_PER_CLASS) return;
    list.push(buf);
    this.retained += size;
  }

  get retainedBytes(): number {
    return this.retained;
  }
}

function classOf(length: number): number {
  if (length <= MIN_CLASS) return MIN_CLASS;
  return 2 ** Math.ceil(Math.log2(length));
}

/** Shared by every connection of the process: one event loop, no locking needed. */
export const ioBuffers = new BufferPool();
