import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadXxhash } from '../../src/blockdev/xxhash.js';
import { DiffEncoder, DiffStreamError, DIFF_MAGIC, MAX_DATA_RECORD, type DiffHeader, type DiffRecord } from '../../src/snapshot/diff-stream.js';
import { DiffStreamReader } from '../../src/snapshot/diff-stream-reader.js';

beforeAll(async () => {
  await loadXxhash();
});

const SIZE = 1 << 20;

interface Encoded {
  bytes: Buffer;
  /** Where the header ends, and each record's [start, end) in the stream, the end record last. */
  headerEnd: number;
  spans: Array<[number, number]>;
}

type Piece = { kind: 'data'; gap: number; data: Uint8Array } | { kind: 'zero'; gap: number; length: number };

const pieceArb: fc.Arbitrary<Piece> = fc.oneof(
  fc.record({ kind: fc.constant('data' as const), gap: fc.nat(5000), data: fc.uint8Array({ minLength: 1, maxLength: 3000 }) }),
  fc.record({ kind: fc.constant('zero' as const), gap: fc.nat(5000), length: fc.integer({ min: 1, max: 100_000 }) }),
);

const headerArb: fc.Arbitrary<DiffHeader> = fc.record({
  size: fc.constant(SIZE),
  from: fc.option(fc.record({ uuid: fc.uuid(), name: fc.string({ minLength: 1, maxLength: 20 }) }), { nil: null }),
  to: fc.record({ uuid: fc.uuid(), name: fc.string({ minLength: 1, maxLength: 20 }) }),
  volume: fc.string({ minLength: 1, maxLength: 20 }),
  created: fc.constant('2026-12-01T00:00:00.000Z'),
});

/** Lays the pieces out in order from offset 0, dropping what would run past the size. */
function layout(pieces: Piece[]): DiffRecord[] {
  const out: DiffRecord[] = [];
  let at = 0;
  for (const p of pieces) {
    const offset = at + p.gap;
    const length = p.kind === 'data' ? p.data.length : p.length;
    if (offset + length > SIZE) break;
    out.push(p.kind === 'data' ? { kind: 'data', offset, data: Buffer.from(p.data) } : { kind: 'zero', offset, length });
    at = offset + length;
  }
  return out;
}

function encode(header: DiffHeader, records: DiffRecord[]): Encoded {
  const enc = new DiffEncoder(header);
  const parts: Buffer[] = [enc.start()];
  const headerEnd = parts[0]!.length;
  let pos = headerEnd;
  const spans: Array<[number, number]> = [];
  const add = (bufs: Buffer[]): void => {
    const start = pos;
    for (const b of bufs) {
      parts.push(b);
      pos += b.length;
    }
    spans.push([start, pos]);
  };
  for (const r of records) add(r.kind === 'data' ? enc.data(r.offset, r.data) : [enc.zero(r.offset, r.length)]);
  add([enc.end()]);
  return { bytes: Buffer.concat(parts), headerEnd, spans };
}

/** The stream in chunks of the given sizes (cycled), as a pipe delivers it. */
async function* chunked(bytes: Buffer, sizes: number[]): AsyncGenerator<Buffer> {
  let i = 0;
  for (let at = 0; at < bytes.length; i++) {
    const n = Math.max(1, sizes[i % sizes.length]!);
    yield bytes.subarray(at, at + n);
    at += n;
  }
}

async function decode(source: AsyncIterable<Uint8Array>): Promise<{ header: DiffHeader; records: DiffRecord[] }> {
  const reader = new DiffStreamReader(source);
  const header = await reader.header();
  const records: DiffRecord[] = [];
  for (let r = await reader.record(); r; r = await reader.record()) records.push(r);
  return { header, records };
}

async function decodeError(bytes: Buffer): Promise<DiffStreamError> {
  try {
    await decode(chunked(bytes, [977]));
  } catch (err) {
    if (err instanceof DiffStreamError) return err;
    throw err;
  }
  throw new Error('the damaged stream decoded without an error');
}

/** The record a stream byte belongs to: null in the header, else its sequence number (the end record's is the record count). */
function recordAt(e: Encoded, byte: number): number | null {
  if (byte < e.headerEnd) return null;
  return e.spans.findIndex(([s, end]) => byte >= s && byte < end);
}

describe('diff stream codec', () => {
  it('round-trips random records, however the stream is cut into chunks', async () => {
    await fc.assert(
      fc.asyncProperty(headerArb, fc.array(pieceArb, { maxLength: 30 }), fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 5 }), async (header, pieces, sizes) => {
        const records = layout(pieces);
        const e = encode(header, records);
        const got = await decode(chunked(e.bytes, sizes));
        expect(got.header).toEqual(header);
        expect(got.records).toEqual(records);
      }),
      { numRuns: 150 },
    );
  });

  it('finds any single damaged byte and names the header or the record it is in', async () => {
    await fc.assert(
      fc.asyncProperty(headerArb, fc.array(pieceArb, { maxLength: 8 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.integer({ min: 1, max: 255 }), async (header, pieces, where, xor) => {
        const e = encode(header, layout(pieces));
        const at = Math.floor(where * e.bytes.length);
        const bad = Buffer.from(e.bytes);
        bad[at]! ^= xor;
        const err = await decodeError(bad);
        expect(err.code).not.toBe('ETRUNCATED');
        expect(err.record).toBe(recordAt(e, at));
        expect(err.streamOffset).toBeLessThanOrEqual(Math.max(at, e.headerEnd));
      }),
      { numRuns: 400 },
    );
  });

  it('finds a truncation at any byte and names where the stream stops', async () => {
    await fc.assert(
      fc.asyncProperty(headerArb, fc.array(pieceArb, { maxLength: 8 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), async (header, pieces, where) => {
        const e = encode(header, layout(pieces));
        const cut = Math.floor(where * e.bytes.length);
        const err = await decodeError(e.bytes.subarray(0, cut));
        expect(err.code).toBe('ETRUNCATED');
        expect(err.record).toBe(recordAt(e, cut));
        expect(err.streamOffset).toBe(cut);
        expect(err.message).toMatch(/truncated/);
      }),
      { numRuns: 300 },
    );
  });

  it('refuses bytes after the end record, a record dropped, and a record from another stream', async () => {
    const header: DiffHeader = { size: SIZE, from: null, to: { uuid: 'u1', name: 's1' }, volume: 'v', created: 'now' };
    const records: DiffRecord[] = [
      { kind: 'data', offset: 0, data: Buffer.alloc(512, 1) },
      { kind: 'zero', offset: 4096, length: 4096 },
      { kind: 'data', offset: 65536, data: Buffer.alloc(512, 2) },
    ];
    const e = encode(header, records);
    expect((await decodeError(Buffer.concat([e.bytes, Buffer.from([0])]))).message).toMatch(/after the end record/);
    const dropped = Buffer.concat([e.bytes.subarray(0, e.spans[1]![0]), e.bytes.subarray(e.spans[1]![1])]);
    const err = await decodeError(dropped);
    expect(err.message).toMatch(/record 1: sequence number 2 where 1 was due/);
    const other = encode({ ...header, to: { uuid: 'u2', name: 's1' } }, records);
    const spliced = Buffer.concat([e.bytes.subarray(0, e.spans[1]![0]), other.bytes.subarray(other.spans[1]![0])]);
    expect((await decodeError(spliced)).message).toMatch(/record 1: head damaged/);
  });

  it('names an unknown version, an RBD diff, and something else entirely', async () => {
    const e = encode({ size: SIZE, from: null, to: { uuid: 'u', name: 's' }, volume: 'v', created: 'now' }, []);
    const v2 = Buffer.from(e.bytes);
    v2.writeUInt16LE(2, 8);
    // The prefix checksum is recomputed as a version-2 writer would have.
    const { hasher } = await import('../../src/snapshot/diff-stream.js');
    v2.writeUInt32LE(hasher().h32(v2.subarray(0, 16), 0x53444946), 16);
    const err = await decodeError(v2);
    expect(err.code).toBe('EVERSION');
    expect(err.message).toMatch(/stream version 2; this Strata reads version 1 \(a newer Strata wrote it\)/);
    expect((await decodeError(Buffer.from('rbd diff v2\nxxxxxxxxxxxxxxxxxxx'))).message).toMatch(/RBD diff/);
    expect((await decodeError(Buffer.alloc(64, 7))).code).toBe('EMAGIC');
    expect(DIFF_MAGIC.length).toBe(8);
  });

  it('splits a long data piece into records no longer than the limit', async () => {
    const size = 3 * MAX_DATA_RECORD;
    const header: DiffHeader = { size, from: { uuid: 'a', name: 'a' }, to: { uuid: 'b', name: 'b' }, volume: 'v', created: 'now' };
    const enc = new DiffEncoder(header);
    const data = Buffer.alloc(MAX_DATA_RECORD * 2 + 100, 9);
    const bytes = Buffer.concat([enc.start(), ...enc.data(100, data), enc.end()]);
    const got = await decode(chunked(bytes, [1 << 20]));
    expect(got.records.map((r) => (r.kind === 'data' ? r.data.length : -1))).toEqual([MAX_DATA_RECORD, MAX_DATA_RECORD, 100]);
    expect(enc.totals()).toEqual({ records: 3, dataBytes: data.length, zeroBytes: 0 });
  });

  it('the encoder refuses records out of order or past the size', () => {
    const enc = new DiffEncoder({ size: 8192, from: null, to: { uuid: 'u', name: 's' }, volume: 'v', created: 'now' });
    enc.zero(4096, 10);
    expect(() => enc.zero(4000, 10)).toThrow(/overlaps or precedes/);
    expect(() => enc.zero(8000, 1000)).toThrow(/past the volume's size/);
  });
});
