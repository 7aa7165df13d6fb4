/**
 * The grains a stream has shown, by the sector their marker starts at, until
 * a grain table claims them: grains arrive in increasing file order, so the
 * log is a sorted list searched by halving, and the claimed front of it is
 * dropped as the tables come (VMware writes each table after its grains).
 * Sectors and grain numbers fit 32 bits (table entries are 32-bit sectors),
 * so an entry costs 9 bytes, whatever a writer that keeps every table to
 * the end makes it hold.
 */
export class GrainLog {
  private sectors = new Uint32Array(1024);
  private grains = new Uint32Array(1024);
  private claimed = new Uint8Array(1024);
  private base = 0;
  private n = 0;

  add(sector: number, grain: number): void {
    if (this.n === this.sectors.length) this.make(Math.max(1024, (this.n - this.base) * 2));
    this.sectors[this.n] = sector;
    this.grains[this.n] = grain;
    this.claimed[this.n] = 0;
    this.n++;
  }

  /** The grain whose marker is at `sector`, marked claimed; null when none is there or a table took it already. */
  claim(sector: number): number | null {
    let lo = this.base;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sectors[mid]! < sector) lo = mid + 1;
      else hi = mid;
    }
    if (lo === this.n || this.sectors[lo] !== sector || this.claimed[lo]) return null;
    this.claimed[lo] = 1;
    const grain = this.grains[lo]!;
    while (this.base < this.n && this.claimed[this.base]) this.base++;
    return grain;
  }

  /** The first grain no table claimed. */
  unclaimed(): { sector: number; grain: number } | null {
    for (let i = this.base; i < this.n; i++) if (!this.claimed[i]) return { sector: this.sectors[i]!, grain: this.grains[i]! };
    return null;
  }

  /** Moves what is not claimed yet to the front of arrays of `capacity` entries. */
  private make(capacity: number): void {
    const keep = this.n - this.base;
    const sectors = new Uint32Array(capacity);
    const grains = new Uint32Array(capacity);
    const claimed = new Uint8Array(capacity);
    sectors.set(this.sectors.subarray(this.base, this.n));
    grains.set(this.grains.subarray(this.base, this.n));
    claimed.set(this.claimed.subarray(this.base, this.n));
    this.sectors = sectors;
    this.grains = grains;
    this.claimed = claimed;
    this.base = 0;
    this.n = keep;
  }
}

/** Grain numbers seen, as bitmaps of 4096 grains made when first touched: memory follows what the stream holds, not what its capacity claims. */
export class GrainSet {
  private readonly maps = new Map<number, Uint8Array>();

  /** False when `grain` was added before. */
  add(grain: number): boolean {
    const key = Math.floor(grain / 4096);
    let map = this.maps.get(key);
    if (!map) this.maps.set(key, (map = new Uint8Array(512)));
    const bit = grain % 4096;
    const mask = 1 << (bit & 7);
    if (map[bit >> 3]! & mask) return false;
    map[bit >> 3]! |= mask;
    return true;
  }
}
