import type { BlockDevice } from '../blockdev/index.js';

/** A device that answers block status (a volume, or an NBD export of one). */
export type Mappable = Pick<BlockDevice, 'name' | 'size'> & Required<Pick<BlockDevice, 'blockStatus'>>;

export type RunType = 'data' | 'zero' | 'hole';

/**
 * One run of the volume's map, merged with its equal neighbours. `zero` and
 * `hole` are block status's own flags; `type` is the word for people: a hole
 * is unallocated and reads zeroes, zero is allocated and known to read zeroes,
 * data is anything else (a hole that reads from a lower layer included).
 */
export interface MapRun {
  offset: number;
  length: number;
  type: RunType;
  zero: boolean;
  hole: boolean;
}

/** How much one blockStatus call asks about: big enough to be few calls, small enough to bound one answer. */
const STATUS_SPAN = 1024 ** 3;

/** Walks the whole volume in blockStatus spans and yields its runs, adjacent equal runs merged across span boundaries. */
export async function* volumeRuns(volume: Mappable, onProgress?: (done: number) => void): AsyncGenerator<MapRun> {
  let pending: MapRun | undefined;
  let pos = 0;
  while (pos < volume.size) {
    const want = Math.min(STATUS_SPAN, volume.size - pos);
    const extents = await volume.blockStatus(pos, want);
    const start = pos;
    for (const e of extents) {
      // Answers may cover less than asked, never more; clip anything past the span.
      if (e.offset !== pos || e.length <= 0) throw new Error(`${volume.name}: block status answered offset ${e.offset} length ${e.length}, expected offset ${pos}`);
      const length = Math.min(e.length, start + want - pos);
      if (pending && pending.zero === e.zero && pending.hole === e.hole) pending.length += length;
      else {
        if (pending) yield pending;
        pending = { offset: pos, length, type: !e.zero ? 'data' : e.hole ? 'hole' : 'zero', zero: e.zero, hole: e.hole };
      }
      pos += length;
      if (pos === start + want) break;
    }
    if (pos === start) throw new Error(`${volume.name}: block status gave no answer at offset ${pos}`);
    onProgress?.(pos);
  }
  if (pending) yield pending;
}
