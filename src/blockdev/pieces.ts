/** The part of a byte range that falls inside one fixed-size unit (a memory page, a RAID chunk). */
export interface Piece {
  /** Index of the unit. */
  chunk: number;
  /** Offset of the piece inside its unit. */
  within: number;
  length: number;
  /** Offset of the piece from the start of the range (in the request's buffer). */
  at: number;
}

/** Splits [offset, offset + length) at every multiple of `unit`. */
export function pieces(unit: number, offset: number, length: number): Piece[] {
  const out: Piece[] = [];
  let at = 0;
  while (at < length) {
    const pos = offset + at;
    const chunk = Math.floor(pos / unit);
    const within = pos - chunk * unit;
    const n = Math.min(unit - within, length - at);
    out.push({ chunk, within, length: n, at });
    at += n;
  }
  return out;
}
