/** Whether sector `s` of a block is marked in its bitmap (most significant bit first). */
export const sectorSet = (bitmap: Buffer, s: number): boolean => ((bitmap[s >> 3] ?? 0) & (0x80 >> (s & 7))) !== 0;

/**
 * Calls `emit` for each run of marked sectors in `data`, whose first sector
 * is sector `first` of the block. Unmarked sectors are not this layer's: a
 * dynamic disk reads them as zeroes, a differencing one from its parent.
 */
export async function emitSetSectors(bitmap: Buffer, first: number, data: Buffer, emit: (sector: number, data: Buffer) => Promise<void>): Promise<void> {
  const count = data.length / 512;
  let s = 0;
  while (s < count) {
    while (s < count && !sectorSet(bitmap, first + s)) s++;
    const start = s;
    while (s < count && sectorSet(bitmap, first + s)) s++;
    if (s > start) await emit(first + start, data.subarray(start * 512, s * 512));
  }
}

/** Sets the bits of sectors [from, to) of a block. */
export function markSectors(bitmap: Buffer, from: number, to: number): void {
  for (let s = from; s < to; s++) bitmap[s >> 3] = bitmap[s >> 3]! | (0x80 >> (s & 7));
}
