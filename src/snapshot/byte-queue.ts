/**
 * The bytes of a stream as they arrive from any source of chunks (a file, a
 * pipe, a socket), taken in exact amounts: what the diff and send stream
 * readers parse their records from.
 */
export class ByteQueue {
  private readonly it: AsyncIterator<Uint8Array>;
  private chunks: Buffer[] = [];
  private held = 0;
  private sourceDone = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  /** Bytes read from the source and not taken yet. */
  get buffered(): number {
    return this.held;
  }

  /** Exactly `n` bytes, or null when the source ends first (what did arrive stays buffered). */
  async take(n: number): Promise<Buffer | null> {
    await this.fill(n);
    if (this.held < n) return null;
    this.held -= n;
    const head = this.chunks[0]!;
    if (head.length >= n) {
      // Within one chunk: a view of it, not a copy (a stream never reuses a chunk it gave out).
      if (head.length === n) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
      return head.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - done);
      c.copy(out, done, 0, k);
      done += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }

  /** Reads from the source until `n` bytes are buffered or it ends. */
  async fill(n: number): Promise<void> {
    while (this.held < n && !this.sourceDone) {
      const r = await this.it.next();
      if (r.done) {
        this.sourceDone = true;
        break;
      }
      const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      if (b.length === 0) continue;
      this.chunks.push(b);
      this.held += b.length;
    }
  }
}
