/**
 * Buffers of one size reused across requests: no allocation (and no page
 * faults) on the hot path, and no memory outside V8's heap left for its
 * collector to free late. RAID chunks and a pool's copy-up clusters use it.
 */
export class ReusableBuffers {
  private readonly free: Buffer[] = [];

  constructor(
    readonly size: number,
    /** Buffers kept for reuse at most; more in use at once are allocated and dropped. */
    private readonly keep = 64,
  ) {}

  /** A buffer of `size` bytes with undefined contents. */
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  give(buf: Buffer): void {
    if (this.free.length < this.keep && buf.length === this.size) this.free.push(buf);
  }
}
