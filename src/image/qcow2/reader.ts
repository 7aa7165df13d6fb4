import zlib from 'node:zlib';
import type { ByteSource } from '../byte-source.js';
import { ImageFormatError } from '../errors.js';
import type { ImageReader, ImageSink } from '../image-reader.js';
import { readHeader, type Qcow2Header } from './header.js';
import { hostClaims } from './host-claims.js';
import { decodeL2, l1Target } from './l2-entry.js';
import { OffsetHeap, type HeapRow } from '../offset-heap.js';
import { cachedReads } from './cached-reads.js';

/** Host bytes read at once at most when clusters lie next to each other (large reads are what make a copy fast). */
export const MAX_READ = 4 * 1024 * 1024;

/** What a pending read is for. */
const L2 = 0;
const DATA = 1;
const COMPRESSED = 2;

/**
 * A read the decoder still has to do, kept by host offset `at`: of kind L2,
 * the table mapping the guest clusters from `virt`; of kind DATA, `span` host
 * bytes holding `length` guest bytes at `virt` (less than `span` only at the
 * end of the disk), or, where `mask` is not 0, only the subclusters of one
 * cluster whose bits it sets (the cluster is claimed once); of kind
 * COMPRESSED, one compressed cluster of `span` stated bytes.
 */
type Pending = HeapRow<'kind' | 'span' | 'virt' | 'length' | 'mask'>;

/** Opens a qcow2 image (versions 2 and 3) after checking its header; reads no tables yet. */
export async function openQcow2(source: ByteSource): Promise<ImageReader> {
  const header = await readHeader(source);
  return {
    format: 'qcow2',
    subformat: header.version === 2 ? 'v2' : header.extendedL2 ? 'v3 extended L2' : 'v3',
    virtualSize: header.virtualSize,
    backing: header.backing,
    notes: header.notes,
    decode: (sink, signal) => decode(source, header, sink, signal),
  };
}

async function decode(source: ByteSource, h: Qcow2Header, sink: ImageSink, signal?: AbortSignal): Promise<void> {
  const name = source.name;
  const cs = h.clusterSize;
  const bad = (at: number, what: string): ImageFormatError => new ImageFormatError(name, at, what);
  const claims = hostClaims(h.clusterBits);
  const claim = (at: number, length: number, compressed: boolean, what: string): void => {
    const other = claims.claim(at, length, compressed);
    if (other !== null) throw bad(at, `${what} at host offset ${at} is also used by ${other}`);
  };
  const inFile = (at: number, length: number, what: string): void => {
    if (source.size !== null && at + length > source.size) throw bad(at, `${what} at host offset ${at} lies past the end of the file (${source.size} bytes)`);
  };
  const reads = cachedReads(source, Math.max(2 * 1024 * 1024, 4 * cs), h.headBytes);
  claim(0, cs, false, 'the header');
  if (h.l1Size === 0) return;

  const l1 = await reads.read(h.l1Offset, h.l1Size * 8);
  if (l1.length < h.l1Size * 8) throw bad(h.l1Offset + l1.length, `the file ends inside the L1 table`);
  claim(h.l1Offset, h.l1Size * 8, false, 'the L1 table');
  const perL2 = cs * h.l2Entries;
  const heap = new OffsetHeap(['kind', 'span', 'virt', 'length', 'mask'] as const);
  for (let i = 0; i < h.l1Size; i++) {
    const entry = h.l1Offset + i * 8;
    const target = l1Target(l1.readUInt32BE(i * 8), l1.readUInt32BE(i * 8 + 4));
    if (typeof target === 'string') throw bad(entry, target);
    if (target === null) continue;
    if (i * perL2 >= h.virtualSize) throw bad(entry, `L1 entry ${i} maps an L2 table beyond the virtual size ${h.virtualSize}`);
    if (target % cs !== 0) throw bad(entry, `L1 entry ${i} points at host offset ${target}, not a cluster boundary`);
    inFile(target, cs, `the L2 table of L1 entry ${i}`);
    heap.push({ at: target, kind: L2, span: cs, virt: i * perL2, length: 0, mask: 0 });
  }

  let zeroStart = -1;
  let zeroEnd = -1;
  const zero = async (virt: number, length: number): Promise<void> => {
    if (virt === zeroEnd) {
      zeroEnd += length;
      return;
    }
    await flushZero();
    zeroStart = virt;
    zeroEnd = virt + length;
  };
  const flushZero = async (): Promise<void> => {
    if (zeroStart >= 0 && zeroEnd > zeroStart) await sink.zero(zeroStart, zeroEnd - zeroStart);
    zeroStart = zeroEnd = -1;
  };
  const clamp = (virt: number, length: number): number => Math.max(0, Math.min(length, h.virtualSize - virt));
  const sub = cs / 32;
  /** The allocated subclusters of the cluster at `virt` as ranges relative to it, within the disk. */
  const pieces = (virt: number, allocated: number): [number, number][] =>
    bitRuns(allocated)
      .map(([s, n]): [number, number] => [s * sub, clamp(virt + s * sub, n * sub)])
      .filter(([, length]) => length > 0);

  /** The host range still growing: merged into while both host and guest offsets follow on, queued once they do not. */
  let open: Pending | null = null;
  const close = (): void => {
    if (open !== null) heap.push(open);
    open = null;
  };
  const queueData = (at: number, span: number, virt: number): void => {
    const length = clamp(virt, span);
    if (open !== null && open.at + open.span === at && open.virt + open.span === virt && open.span + span <= MAX_READ) {
      open.span += span;
      open.length += length;
      return;
    }
    close();
    open = { at, kind: DATA, span, virt, length, mask: 0 };
  };

  const parseL2 = async (table: Buffer, tableAt: number, base: number): Promise<void> => {
    close();
    for (let e = 0; e < h.l2Entries; e++) {
      const entryAt = tableAt + e * h.l2EntryBytes;
      const o = e * h.l2EntryBytes;
      const virt = base + e * cs;
      const bitmap = h.extendedL2 ? { zeroes: table.readUInt32BE(o + 8), allocated: table.readUInt32BE(o + 12) } : null;
      const m = decodeL2(table.readUInt32BE(o), table.readUInt32BE(o + 4), h.clusterBits, bitmap);
      if (m.kind === 'unallocated') continue;
      if (m.kind === 'invalid') throw bad(entryAt, `L2 entry for guest offset ${virt}: ${m.why}`);
      if (virt >= h.virtualSize) throw bad(entryAt, `L2 entry maps guest offset ${virt}, beyond the virtual size ${h.virtualSize}`);
      if (m.kind === 'zero') {
        await zero(virt, clamp(virt, cs));
        continue;
      }
      if (m.kind === 'compressed') {
        if (m.host < cs) throw bad(entryAt, `compressed cluster for guest offset ${virt} points into the header at host offset ${m.host}`);
        inFile(m.host, 1, `the compressed cluster for guest offset ${virt}`);
        close();
        heap.push({ at: m.host, kind: COMPRESSED, span: m.bytes, virt, length: clamp(virt, cs), mask: 0 });
        continue;
      }
      if (m.host % cs !== 0) throw bad(entryAt, `L2 entry for guest offset ${virt} points at host offset ${m.host}, not a cluster boundary`);
      if (m.kind === 'data') {
        inFile(m.host, Math.min(cs, clamp(virt, cs)), `the data cluster for guest offset ${virt}`);
        queueData(m.host, cs, virt);
        continue;
      }
      // Extended L2: a full cluster is read like any other; else its allocated subclusters are, and its zero ones reported.
      inFile(m.host, 1, `the data cluster for guest offset ${virt}`);
      if (m.allocated === 0xffffffff) {
        queueData(m.host, cs, virt);
        continue;
      }
      close();
      // A subcluster is never both allocated and zero (decodeL2 refuses that), so the two bitmaps are read apart.
      for (const [s, n] of bitRuns(m.zeroes)) {
        const length = clamp(virt + s * sub, n * sub);
        if (length > 0) await zero(virt + s * sub, length);
      }
      const stored = pieces(virt, m.allocated);
      if (stored.length > 0) {
        const lastPiece = stored[stored.length - 1]!;
        heap.push({ at: m.host, kind: DATA, span: lastPiece[0] + lastPiece[1], virt, length: stored.reduce((t, p) => t + p[1], 0), mask: m.allocated });
      }
    }
    close();
    await flushZero();
  };

  for (;;) {
    if (signal?.aborted) throw new Error('interrupted');
    const next = heap.pop();
    if (next === undefined) break;
    if (next.kind === L2) {
      const table = await reads.read(next.at, cs);
      if (table.length < cs) throw bad(next.at + table.length, 'the file ends inside an L2 table');
      claim(next.at, cs, false, 'an L2 table');
      await parseL2(table, next.at, next.virt);
      continue;
    }
    // Data that follows on in the file is read in one go, however many tables it came from.
    const batch: Pending[] = [next];
    let end = next.at + next.span;
    for (let p = heap.peek(); p !== undefined && p.kind !== L2 && p.at <= end && Math.max(end, p.at + p.span) - next.at <= MAX_READ; p = heap.peek()) {
      batch.push(heap.pop()!);
      end = Math.max(end, p.at + p.span);
    }
    const buf = await reads.read(next.at, end - next.at);
    for (const item of batch) {
      const off = item.at - next.at;
      claim(item.at, item.kind === DATA ? item.span : Math.min(item.span, buf.length - off), item.kind === COMPRESSED, item.kind === DATA ? 'a data cluster' : 'a compressed cluster');
      if (item.kind === DATA) {
        for (const [rel, length] of item.mask === 0 ? [[0, item.length]] : pieces(item.virt, item.mask)) {
          if (off + rel + length > buf.length) throw bad(next.at + buf.length, `the file ends inside the data cluster for guest offset ${item.virt + rel}`);
          await sink.data(item.virt + rel, buf.subarray(off + rel, off + rel + length));
        }
      } else {
        if (off >= buf.length) throw bad(item.at, `the file ends before the compressed cluster for guest offset ${item.virt}`);
        await sink.data(item.virt, inflate(buf.subarray(off, off + item.span), cs, item.length, () => bad(item.at, `the compressed cluster for guest offset ${item.virt} does not inflate to ${cs} bytes`)));
      }
    }
  }
}

/** The runs of set bits in a 32-bit subcluster bitmap, as [first bit, count]. */
function bitRuns(bits: number): [number, number][] {
  const runs: [number, number][] = [];
  for (let s = 0; s < 32; s++) {
    if (!(bits & (1 << s))) continue;
    let n = 1;
    while (s + n < 32 && bits & (1 << (s + n))) n++;
    runs.push([s, n]);
    s += n - 1;
  }
  return runs;
}

/** A compressed cluster: raw deflate; the stated size rounds up to a sector, so the stream may end before it. */
function inflate(data: Buffer, clusterSize: number, length: number, bad: () => Error): Buffer {
  let out: Buffer;
  try {
    out = zlib.inflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: clusterSize });
  } catch {
    throw bad();
  }
  if (out.length < clusterSize) throw bad();
  return length === clusterSize ? out : out.subarray(0, length);
}
