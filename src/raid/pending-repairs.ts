import { RaidError } from './errors.js';

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

/** Largest range one record grows to by merging: what carrying it out reads and compares at once. */
const MAX_MERGED = 1024 * 1024;

/**
 * The pending repairs of an open array. Ranges that touch or overlap merge
 * (their members too), up to 1 MiB, so a zeroed stretch of a member is a few
 * records, not one per checksummed block. They live in memory; whoever opened
 * the array read-only may keep them (the CLI stores them in its home) and hand
 * them to the next open, which repairs them when it may write.
 */
export class PendingRepairs {
  private readonly byOffset = new Map<number, PendingRepair>();

  get size(): number {
    return this.byOffset.size;
  }

  /** Records a repair; true if it covers bytes no record covered before. */
  add(p: PendingRepair): boolean {
    let merged: PendingRepair = { offset: p.offset, length: p.length, members: [...p.members] };
    let fresh = true;
    for (let again = true; again; ) {
      again = false;
      for (const e of this.byOffset.values()) {
        const start = Math.min(e.offset, merged.offset);
        const end = Math.max(e.offset + e.length, merged.offset + merged.length);
        if (e.offset > merged.offset + merged.length || merged.offset > e.offset + e.length || end - start > MAX_MERGED) continue;
        if (e.offset <= p.offset && p.offset + p.length <= e.offset + e.length && p.members.every((m) => e.members.includes(m))) fresh = false;
        this.byOffset.delete(e.offset);
        merged = { offset: start, length: end - start, members: [...new Set([...e.members, ...merged.members])] };
        again = true;
        break;
      }
    }
    merged.members.sort((a, b) => a - b);
    this.byOffset.set(merged.offset, merged);
    return fresh;
  }

  delete(p: PendingRepair): void {
    this.byOffset.delete(p.offset);
  }

  list(): PendingRepair[] {
    return [...this.byOffset.values()].sort((a, b) => a.offset - b.offset).map((p) => ({ ...p, members: [...p.members] }));
  }
}

/** Checks a stored list before it is trusted (a hand-edited or truncated file must not drive writes). */
export function parsePendingRepairs(value: unknown, arraySize: number, members: number): PendingRepair[] {
  if (!Array.isArray(value)) throw new RaidError('EFORMAT', 'pending repairs: not a list');
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
    if (!ok) throw new RaidError('EFORMAT', `pending repairs: entry ${i} is malformed or outside the array`);
    return { offset: r.offset!, length: r.length!, members: [...r.members!] };
  });
}
