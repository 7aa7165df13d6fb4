import type { ByteSource } from '../byte-source.js';
import { ImageFormatError } from '../errors.js';
import type { ImageSink } from '../image-reader.js';
import { COMPRESSION_DEFLATE, ENTRY_BYTES, FLAG_ZEROED_GRAIN, SECTOR, type SparseHeader } from './header.js';

/** A sparse extent's geometry, from its checked header, as both ways of decoding it use it. */
export interface Extent {
  readonly source: ByteSource;
  readonly header: SparseHeader;
  readonly virtualSize: number;
  readonly grainBytes: number;
  /** Grains the capacity spans (the last one may be partly past it). */
  readonly grainCount: number;
  /** Grain tables the grain directory has entries for. */
  readonly gtCount: number;
  /** Bytes of one grain table. */
  readonly gtBytes: number;
  readonly compressed: boolean;
  /** A grain table entry of 1 means "reads zeroes": the zeroed-grain flag is set (the specification adds it in version 2; qemu reads the flag in any version, and so does Strata). */
  readonly zeroedGrains: boolean;
  /** Byte ranges of the header and the embedded descriptor, which no table or grain may overlap. */
  readonly reserved: readonly (readonly [number, number])[];
}

export function describeExtent(source: ByteSource, header: SparseHeader): Extent {
  const grainBytes = header.grainSize * SECTOR;
  const grainCount = Math.ceil(header.capacity / header.grainSize);
  const reserved: [number, number][] = [[0, SECTOR]];
  if (header.descriptorSize > 0) reserved.push([header.descriptorOffset * SECTOR, (header.descriptorOffset + header.descriptorSize) * SECTOR]);
  return {
    source,
    header,
    virtualSize: header.capacity * SECTOR,
    grainBytes,
    grainCount,
    gtCount: Math.ceil(grainCount / header.numGTEsPerGT),
    gtBytes: header.numGTEsPerGT * ENTRY_BYTES,
    compressed: header.compressAlgorithm === COMPRESSION_DEFLATE,
    zeroedGrains: (header.flags & FLAG_ZEROED_GRAIN) !== 0,
    reserved,
  };
}

/** Virtual bytes grain `grain` holds: a whole grain, or what is left of the capacity. */
export function grainLength(e: Extent, grain: number): number {
  return Math.min(e.grainBytes, e.virtualSize - grain * e.grainBytes);
}

export const fail = (e: Extent, at: number | null, what: string): ImageFormatError => new ImageFormatError(e.source.name, at, what);

/** Throws unless [start, end) lies inside the file (when its size is known) and clear of the header and descriptor. */
export function checkPlace(e: Extent, start: number, end: number, what: string): void {
  const size = e.source.size;
  if (size !== null && end > size) throw fail(e, start, `${what} ends at ${end}, past the end of the file (${size} bytes)`);
  for (const [s, t] of e.reserved) if (start < t && s < end) throw fail(e, start, `${what} overlaps the ${s === 0 ? 'header' : 'embedded descriptor'}`);
}

/** Reports `buf` (one decompressed grain) to the sink, cut at the capacity; refuses a grain that holds less. */
export async function emitGrain(e: Extent, sink: ImageSink, grain: number, buf: Buffer, at: number): Promise<void> {
  const length = grainLength(e, grain);
  if (buf.length < length) throw fail(e, at, `the compressed grain for LBA ${grain * e.header.grainSize} inflates to ${buf.length} bytes, less than its ${length}`);
  await sink.data(grain * e.grainBytes, buf.length === length ? buf : buf.subarray(0, length));
}

/** `length` bytes at `at`, or an error saying where the file ends inside `what`. */
export async function readExact(e: Extent, at: number, length: number, what: string): Promise<Buffer> {
  const buf = await e.source.read(at, length);
  if (buf.length < length) throw fail(e, at + buf.length, `the file ends inside ${what} (${buf.length} of its ${length} bytes are there)`);
  return buf;
}

/** Byte ranges kept sorted by start, asked which one a range overlaps. */
export type Ranges = readonly (readonly [number, number])[];

export function overlapping(sorted: Ranges, start: number, end: number): readonly [number, number] | null {
  let lo = 0;
  let hi = sorted.length;
  // The first range that ends after `start`.
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]![1] <= start) lo = mid + 1;
    else hi = mid;
  }
  const r = sorted[lo];
  return r && r[0] < end ? r : null;
}
