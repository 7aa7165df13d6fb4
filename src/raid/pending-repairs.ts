/**
 * A repair the array could not write: a reader above proved (by its checksum)
 * which data is right for the range, but the array was open read-only. The
 * members named are those whose copy differs from that data.
 */
export interface PendingRepair {
  /** Array byte range. */
  offset: number;
  length: number;
  members: number[];
}

/**
 * The pending repairs of an open array, one per range (a range found bad again
 * merges its members into the record). They live in memory; whoever opened the
 * array read-only may keep them (the CLI stores them in its home) and hand
 * them to the next open, which repairs them when it may write.
 */
export class PendingRepairs {
  private readonly byRange = new Map<string, PendingRepair>();

  get size(): number {
    return this.byRange.size;
  }

  add(p: PendingRepair): void {
    const key = `${p.offset}+${p.length}`;
    const had = this.byRange.get(key);
    const members = [...new Set([...(had?.members ?? []), ...p.members])].sort((a, b) => a - b);
    this.byRange.set(key, { offset: p.offset, length: p.length, members });
  }

  delete(p: PendingRepair): void {
    this.byRange.delete(`${p.offset}+${p.length}`);
  }

  list(): PendingRepair[] {
    return [...this.byRange.values()].sort((a, b) => a.offset - b.offset).map((p) => ({ ...p, members: [...p.members] }));
  }
}

/** Checks a stored list before it is trusted (a hand-edited or truncated file must not drive writes). */
export function parsePendingRepairs(value: unknown, arraySize: number, members: number): PendingRepair[] {
  if (!Array.isArray(value)) throw new Error('pending repairs: not a list');
  return value.map((v: unknown, i) => {
    const r = v as Partial<PendingRepair> | null;
    const ok =
      r !== null &&
      typeof r === 'object' &&
      Number.isSafeInteger(r.offset) &&
      Number.isSafeInteger(r.length) &&
      r.offset! >= 0 &&
      r.length! > 0 &&
      r.offset! + r.length! <= arraySize &&
      Array.isArray(r.members) &&
      r.members.every((m) => Number.isInteger(m) && m >= 0 && m < members);
    if (!ok) throw new Error(`pending repairs: entry ${i} is malformed or outside the array`);
    return { offset: r.offset!, length: r.length!, members: [...r.members!] };
  });
}
