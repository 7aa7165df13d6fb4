/**
 * Cluster-sized scratch buffers for copy-ups, reused. A write into a cluster
 * the layer inherits reads the whole cluster first; a fresh 64 KiB buffer per
 * such write is memory outside V8's heap that its collector frees late, and
 * under random writes over a snapshot the server's resident size grew by
 * tens of MiB before it did. A few buffers kept for reuse bound that.
 */
export class ClusterBuffers {
  private readonly free: Buffer[] = [];

  constructor(
    readonly size: number,
    /** Buffers kept for reuse at most; more in use at once are allocated and dropped as before. */
    private readonly keep = 32,
  ) {}

  /** A buffer of `size` bytes with undefined contents. */
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafe(this.size);
  }

  give(buf: Buffer): void {
    if (this.free.length < this.keep && buf.length === this.size) this.free.push(buf);
  }
}
