/**
 * The write-intent bitmap that closes the RAID write hole. One bit covers a
 * region of `regionRows` rows of every member. Before any member is written in
 * a region its bit is made durable on every member; after a crash only regions
 * whose bit is set can hold a stripe whose parity or mirrors disagree, and
 * only they are resynced. A bit is cleared lazily, after a whole flush
 * interval in which the region saw no write (md's bitmap daemon does the
 * same), so a busy region costs one bitmap write, not one per request.
 */
export class WriteIntentBitmap {
  readonly bits: Uint8Array;
  private readonly inflight: Uint32Array;
  private readonly lastEpoch: Uint32Array;
  private readonly set = new Set<number>();
  private epoch = 1;
  private running: Promise<void> = Promise.resolve();
  private queued: Promise<void> | undefined;

  constructor(
    readonly regionRows: number,
    readonly regions: number,
    initial: Uint8Array | undefined,
    /** Writes the bitmap bytes to every member; `durable` asks for a flush after. */
    private readonly store: (bits: Uint8Array, durable: boolean) => Promise<void>,
  ) {
    this.bits = new Uint8Array(Math.ceil(regions / 8));
    this.inflight = new Uint32Array(regions);
    this.lastEpoch = new Uint32Array(regions);
    if (initial) {
      for (let r = 0; r < regions; r++) if (initial[r >> 3]! & (1 << (r & 7))) this.mark(r);
    }
  }

  /** Regions whose bit is set, in order. */
  dirtyRegions(): number[] {
    return [...this.set].sort((a, b) => a - b);
  }

  /** Called before member writes to rows [r0, r1); resolves once their bits are durable. */
  begin(r0: number, r1: number): Promise<void> {
    let fresh = false;
    const last = Math.floor((r1 - 1) / this.regionRows);
    for (let g = Math.floor(r0 / this.regionRows); g <= last; g++) {
      this.inflight[g]!++;
      this.lastEpoch[g] = this.epoch;
      if (!this.set.has(g)) {
        this.mark(g);
        fresh = true;
      }
    }
    return fresh ? this.persist(true) : Promise.resolve();
  }

  end(r0: number, r1: number): void {
    const last = Math.floor((r1 - 1) / this.regionRows);
    for (let g = Math.floor(r0 / this.regionRows); g <= last; g++) this.inflight[g]!--;
  }

  /** Starts a flush interval; returns its number for afterFlush. */
  flushStarted(): number {
    return ++this.epoch;
  }

  /**
   * Members were flushed for the interval `started`: clear regions idle since
   * before the previous interval. The clearing write need not be durable: a
   * lost clear only costs a resync.
   */
  async afterFlush(started: number): Promise<void> {
    let changed = false;
    for (const g of this.set) {
      if (this.inflight[g] === 0 && this.lastEpoch[g]! < started - 1) {
        this.unmark(g);
        changed = true;
      }
    }
    if (changed) await this.persist(false);
  }

  /** Clears a region once it is known consistent (after resync). */
  clear(region: number): void {
    if (this.inflight[region] === 0) this.unmark(region);
  }

  /** Clears every idle region and stores the result durably (clean close). */
  async clearAll(): Promise<void> {
    for (const g of [...this.set]) this.clear(g);
    await this.persist(true);
  }

  private mark(g: number): void {
    this.set.add(g);
    this.bits[g >> 3]! |= 1 << (g & 7);
  }

  private unmark(g: number): void {
    this.set.delete(g);
    this.bits[g >> 3]! &= ~(1 << (g & 7));
  }

  /** Stores are serialized; callers that arrive while one is queued share it. */
  private persist(durable: boolean): Promise<void> {
    if (this.queued && durable) return this.queued;
    const p = this.running.then(() => {
      if (this.queued === p) this.queued = undefined;
      return this.store(this.bits.slice(), durable);
    });
    if (durable) this.queued = p;
    this.running = p.catch(() => undefined);
    return p;
  }
}
