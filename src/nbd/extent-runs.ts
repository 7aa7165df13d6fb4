/** What coalesce needs of an extent: where it is (its state comes from `stateOf`). */
export interface Span {
  offset: number;
  length: number;
}

export interface Run {
  offset: number;
  length: number;
  zero: boolean;
  state: number;
}

/**
 * Turns a device's extents into consecutive runs from `offset`: clipped to the
 * range, gaps and malformed or out-of-order extents filled as data, neighbours
 * with the same state merged. With `cover` the runs reach the end of the
 * range (a READ must account for every byte); without it they stop where the
 * device's answer stops (a device may answer part of a long range, and NBD
 * lets block status answer less: calling the rest data would hide its holes).
 */
export function coalesce<E extends Span>(extents: readonly E[], offset: number, length: number, stateOf: (e: E) => number | boolean, cover: boolean): Run[] {
  const end = offset + length;
  const runs: Run[] = [];
  let pos = offset;
  const add = (len: number, state: number): void => {
    const prev = runs[runs.length - 1];
    if (prev && prev.state === state) prev.length += len;
    else runs.push({ offset: pos, length: len, zero: state !== 0, state });
    pos += len;
  };
  for (const e of extents) {
    if (pos >= end) break;
    // A device's answer is not trusted to be well formed: what cannot be used is reported as data.
    if (!Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.length <= 0) continue;
    const eEnd = Math.min(e.offset + e.length, end);
    if (eEnd <= pos) continue;
    if (e.offset > pos) add(Math.min(e.offset, end) - pos, 0);
    if (pos >= end) break;
    const s = stateOf(e);
    add(eEnd - pos, typeof s === 'boolean' ? (s ? 1 : 0) : s);
  }
  if (pos < end && (cover || runs.length === 0)) add(end - pos, 0);
  return runs;
}
