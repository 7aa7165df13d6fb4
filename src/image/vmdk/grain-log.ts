/**
 * The grains a stream has shown, by the sector their marker starts at, until
 * a grain table claims them: grains arrive in increasing file order, so the
 * log is a sorted list searched by halving, and the claimed front of it is
 * dropped as the tables come (VMware writes each table after its grains).
 */
export class GrainLog {
  private sectors: number[] = [];
  private grains: number[] = [];
  private claimed: boolean[] = [];
  private base = 0;

  add(sector: number, grain: number): void {
    this.sectors.push(sector);
    this.grains.push(grain);
    this.claimed.push(false);
  }

  /** The grain whose marker is at `sector`, marked claimed; null when none is there or a table took it already. */
  claim(sector: number): number | null {
    let lo = this.base;
    let hi = this.sectors.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sectors[mid]! < sector) lo = mid + 1;
      else hi = mid;
    }
    if (lo === this.sectors.length || this.sectors[lo] !== sector || this.claimed[lo]) return null;
    this.claimed[lo] = true;
    const grain = this.grains[lo]!;
    while (this.base < this.claimed.length && this.claimed[this.base]) this.base++;
    if (this.base > 4096 && this.base * 2 > this.sectors.length) {
      this.sectors = this.sectors.slice(this.base);
      this.grains = this.grains.slice(this.base);
      this.claimed = this.claimed.slice(this.base);
      this.base = 0;
    }
    return grain;
  }

  /** The first grain no table claimed. */
  unclaimed(): { sector: number; grain: number } | null {
    for (let i = this.base; i < this.sectors.length; i++) if (!this.claimed[i]) return { sector: this.sectors[i]!, grain: this.grains[i]! };
    return null;
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
