/** A byte range. */
export interface Span {
  offset: number;
  length: number;
}

/** `ranges` minus `minus`, both sorted and neither overlapping itself; each range finds its place in `minus` by binary search. */
export function subtract(ranges: readonly Span[], minus: readonly Span[]): Span[] {
  const out: Span[] = [];
  for (const r of ranges) {
    const end = r.offset + r.length;
    let lo = 0;
    let hi = minus.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (minus[mid]!.offset + minus[mid]!.length <= r.offset) lo = mid + 1;
      else hi = mid;
    }
    let pos = r.offset;
    for (let k = lo; k < minus.length && pos < end; k++) {
      const m = minus[k]!;
      if (m.offset >= end) break;
      if (m.offset > pos) out.push({ offset: pos, length: m.offset - pos });
      pos = Math.max(pos, m.offset + m.length);
    }
    if (pos < end) out.push({ offset: pos, length: end - pos });
  }
  return out;
}

/** Adjacent ranges joined into one. */
export function joined(ranges: readonly Span[]): Span[] {
  const out: Span[] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last && last.offset + last.length === r.offset) last.length += r.length;
    else out.push({ offset: r.offset, length: r.length });
  }
  return out;
}
