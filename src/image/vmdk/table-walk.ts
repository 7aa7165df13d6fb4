import type { ImageSink } from '../image-reader.js';
import { checkPlace, emitGrain, fail, grainLength, overlapping, readExact, type Extent } from './extent.js';
import { GRAIN_MARKER_BYTES } from './markers.js';
import { ENTRY_BYTES, SECTOR } from './header.js';
import { inflateAt, maxCompressed } from './inflate-check.js';
import { OffsetHeap, type HeapRow } from '../offset-heap.js';

/** Grains stored back to back from byte offset `at` in the file, virtually consecutive from index `grain` of the disk. */
type GrainRun = HeapRow<'grain' | 'count'>;
type RunHeap = OffsetHeap<'grain' | 'count'>;

/** Bytes read at once from grains that lie back to back in the file. */
const READ_SPAN = 4 * 1024 * 1024;
/** Tables are sorted by a key of sector and index in one number: the index takes the low bits. */
const INDEX_SPAN = 2 ** 20;

/**
 * Decodes an extent through its tables, the way a reader that can seek
 * does, but in file order: the grain directory, then every grain table by
 * offset, then the grains they map by offset (a heap of runs of back-to-back
 * grains, read together). On a forward-only source this works wherever the
 * tables precede the grains, as in every monolithicSparse file qemu-img and
 * VMware write and in qemu-img's streamOptimized files.
 */
export async function decodeByTables(e: Extent, sink: ImageSink, signal?: AbortSignal): Promise<void> {
  const h = e.header;
  if (h.gdOffset === 0) throw fail(e, 56, 'the grain directory offset is 0');
  const gdAt = h.gdOffset * SECTOR;
  const gdBytes = e.gtCount * ENTRY_BYTES;
  checkPlace(e, gdAt, gdAt + gdBytes, 'the grain directory');
  const gd = await readExact(e, gdAt, gdBytes, 'the grain directory');

  // The allocated tables in file order, as sector and index in one number each: a directory may have a million entries.
  let count = 0;
  const keys = new Float64Array(e.gtCount);
  for (let i = 0; i < e.gtCount; i++) {
    const sector = gd.readUInt32LE(i * ENTRY_BYTES);
    if (sector !== 0) keys[count++] = sector * INDEX_SPAN + i;
  }
  const tables = keys.subarray(0, count).sort();
  const table = (k: number): { at: number; index: number } => ({ at: Math.floor(tables[k]! / INDEX_SPAN) * SECTOR, index: tables[k]! % INDEX_SPAN });
  const metadata: [number, number][] = [[gdAt, gdAt + gdBytes]];
  let tablesEnd = 0;
  for (let k = 0; k < count; k++) {
    const t = table(k);
    const end = t.at + e.gtBytes;
    checkPlace(e, t.at, end, `grain table ${t.index}`);
    if (t.at < tablesEnd || (t.at < gdAt + gdBytes && gdAt < end)) throw fail(e, gdAt + t.index * ENTRY_BYTES, `grain table ${t.index} at offset ${t.at} overlaps another grain table or the grain directory`);
    tablesEnd = end;
    metadata.push([t.at, end]);
  }
  metadata.sort((a, b) => a[0] - b[0]);

  const heap: RunHeap = new OffsetHeap(['grain', 'count']);
  for (let k = 0; k < count; k++) {
    if (signal?.aborted) throw new Error('interrupted');
    const t = table(k);
    await readTable(e, t, await readExact(e, t.at, e.gtBytes, `grain table ${t.index}`), heap, sink);
  }

  let end = 0;
  while (heap.size > 0) {
    if (signal?.aborted) throw new Error('interrupted');
    const first = heap.pop()!;
    if (first.at < end) throw fail(e, first.at, `the grain for LBA ${first.grain * h.grainSize} overlaps the grain before it (two grain table entries share its sectors)`);
    if (e.compressed) end = await compressedGrain(e, first, metadata, sink);
    else end = await plainGrains(e, first, heap, metadata, sink);
  }
}

/** Turns one grain table into runs on the heap (back-to-back grains of consecutive LBAs merged) and zero grains reported at once. */
async function readTable(e: Extent, t: { at: number; index: number }, gt: Buffer, heap: RunHeap, sink: ImageSink): Promise<void> {
  let run: GrainRun | null = null;
  let zeroes: { grain: number; count: number } | null = null;
  const flushZeroes = async (): Promise<void> => {
    if (!zeroes) return;
    const last = zeroes.grain + zeroes.count - 1;
    await sink.zero(zeroes.grain * e.grainBytes, (last - zeroes.grain) * e.grainBytes + grainLength(e, last));
    zeroes = null;
  };
  for (let j = 0; j < e.header.numGTEsPerGT; j++) {
    const entry = gt.readUInt32LE(j * ENTRY_BYTES);
    if (entry === 0) continue;
    const grain = t.index * e.header.numGTEsPerGT + j;
    if (grain >= e.grainCount) throw fail(e, t.at + j * ENTRY_BYTES, `grain table ${t.index} maps LBA ${grain * e.header.grainSize}, past the capacity of ${e.header.capacity} sectors`);
    if (entry === 1 && e.zeroedGrains) {
      if (zeroes && zeroes.grain + zeroes.count === grain) zeroes.count++;
      else {
        await flushZeroes();
        zeroes = { grain, count: 1 };
      }
      continue;
    }
    const at = entry * SECTOR;
    if (!e.compressed && run && run.at + run.count * e.grainBytes === at && run.grain + run.count === grain) run.count++;
    else {
      if (run) heap.push(run);
      run = { at, grain, count: 1 };
    }
  }
  if (run) heap.push(run);
  await flushZeroes();
}

/** Reads the grains from `first` on that lie back to back in the file, up to READ_SPAN; returns where they end. */
async function plainGrains(e: Extent, first: GrainRun, heap: RunHeap, metadata: [number, number][], sink: ImageSink): Promise<number> {
  const perRead = Math.max(1, Math.floor(READ_SPAN / e.grainBytes));
  const runs: GrainRun[] = [];
  let count = 0;
  const take = (r: GrainRun): void => {
    const n = Math.min(r.count, perRead - count);
    runs.push({ at: r.at, grain: r.grain, count: n });
    count += n;
    if (n < r.count) heap.push({ at: r.at + n * e.grainBytes, grain: r.grain + n, count: r.count - n });
  };
  take(first);
  for (let next = heap.peek(); next && count < perRead && next.at === first.at + count * e.grainBytes; next = heap.peek()) take(heap.pop()!);
  const span = count * e.grainBytes;
  const what = `the grain for LBA ${first.grain * e.header.grainSize}`;
  checkPlace(e, first.at, first.at + span, what);
  const clash = overlapping(metadata, first.at, first.at + span);
  if (clash) throw fail(e, first.at, `${what} overlaps a grain table or the grain directory at ${clash[0]}`);
  const buf = await readExact(e, first.at, span, what);
  let offset = 0;
  for (const r of runs) {
    const last = r.grain + r.count - 1;
    const length = (r.count - 1) * e.grainBytes + grainLength(e, last);
    await sink.data(r.grain * e.grainBytes, buf.subarray(offset, offset + length));
    offset += r.count * e.grainBytes;
  }
  return first.at + span;
}

/** Reads one compressed grain (its marker, then its bytes) and reports it inflated; returns where its bytes end. */
async function compressedGrain(e: Extent, g: GrainRun, metadata: [number, number][], sink: ImageSink): Promise<number> {
  const lba = g.grain * e.header.grainSize;
  const what = `the compressed grain for LBA ${lba}`;
  const marker = await readExact(e, g.at, GRAIN_MARKER_BYTES, what);
  const said = marker.readBigUInt64LE(0);
  if (said !== BigInt(lba)) throw fail(e, g.at, `the grain marker says LBA ${said}, its grain table entry LBA ${lba}`);
  const size = marker.readUInt32LE(8);
  if (size === 0 || size > maxCompressed(e)) throw fail(e, g.at + 8, `${what} claims ${size} compressed bytes (a grain is ${e.grainBytes})`);
  const end = g.at + GRAIN_MARKER_BYTES + size;
  checkPlace(e, g.at, end, what);
  const clash = overlapping(metadata, g.at, end);
  if (clash) throw fail(e, g.at, `${what} overlaps a grain table or the grain directory at ${clash[0]}`);
  const data = await readExact(e, g.at + GRAIN_MARKER_BYTES, size, what);
  await emitGrain(e, sink, g.grain, inflateAt(e, data, lba, g.at), g.at);
  return end;
}
