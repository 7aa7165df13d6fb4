import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ByteSource } from '../../src/image/byte-source.js';
import type { ImageReader } from '../../src/image/image-reader.js';
import { counted, snapshotNames, type ChainLayer } from '../../src/host/image-chain.js';
import { importChain, volumeTarget } from '../../src/host/image-import.js';
import { openFrozen } from '../../src/snapshot/index.js';
import { memoryPool } from '../support/pool.js';
import { propertyRuns } from '../support/scratch.js';

const SIZE = 256 * 1024;

/** What one layer reports: data (a byte to fill with) or zeroes, at sector-aligned places. */
interface Piece {
  at: number;
  len: number;
  fill: number | null;
}

const GRAIN = 8192;

/** One layer: each grain unallocated, zero, or data; adjacent grains of one kind reported as one piece, last first (any order is allowed). */
const layerArb: fc.Arbitrary<Piece[]> = fc.array(fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 3 }) }), { minLength: SIZE / GRAIN, maxLength: SIZE / GRAIN }).map((grains) => {
  const pieces: Piece[] = [];
  grains.forEach((g, i) => {
    if (g === undefined) return;
    const last = pieces[pieces.length - 1];
    if (last && last.fill === g && last.at + last.len === i * GRAIN) last.len += GRAIN;
    else pieces.push({ at: i * GRAIN, len: GRAIN, fill: g });
  });
  return pieces.reverse();
});

/** A reader of a made-up format: reports its pieces in the order given (any virtual order is allowed). */
function fakeLayer(file: string, pieces: Piece[]): ChainLayer {
  const source: ByteSource = { name: file, size: 0, seekable: true, read: async () => Buffer.alloc(0), close: async () => undefined };
  const reader: ImageReader = {
    format: 'qcow2',
    subformat: null,
    virtualSize: SIZE,
    backing: null,
    notes: [],
    decode: async (sink) => {
      for (const p of pieces) {
        if (p.fill === null) await sink.zero(p.at, p.len);
        else await sink.data(p.at, Buffer.alloc(p.len, p.fill));
      }
    },
  };
  return { file, reader, source: counted(source) };
}

function apply(model: Buffer, pieces: Piece[]): void {
  for (const p of pieces) model.fill(p.fill ?? 0, p.at, p.at + p.len);
}

/** The first offset where two buffers differ, or -1 (a diff of half a megabyte would drown the report). */
function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return Math.min(a.length, b.length);
}

async function readAll(h: { read(b: Uint8Array, o: number): Promise<void>; size: number; close(): Promise<void> }): Promise<Buffer> {
  const b = Buffer.alloc(h.size);
  await h.read(b, 0);
  await h.close();
  return b;
}

describe('a backing chain imported into a volume', () => {
  it('each snapshot reads as its image over the ones below, the head as the top, and a flattened import as the top alone, into a new volume or over an old one', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(layerArb, { minLength: 1, maxLength: 4 }), fc.boolean(), fc.boolean(), async (chain, flatten, existing) => {
        const { pool } = await memoryPool({ deviceSize: 16 << 20, clusterSize: 65536 });
        await pool.createVolume('v', SIZE, { incomplete: !existing });
        if (existing) {
          // What a volume held before reads as the image afterwards, the ranges the image leaves unallocated included.
          const old = await pool.openVolume('v');
          await old.write(Buffer.alloc(SIZE, 0xee), 0);
          await old.close();
        }
        const files = chain.map((_, i) => `/images/layer ${i % 2}.qcow2`);
        const names = snapshotNames(files.slice(0, -1));
        const { target, handle } = await volumeTarget(pool, 'v');
        const r = await importChain(
          chain.map((pieces, i) => fakeLayer(files[i]!, pieces)),
          target,
          { fresh: !existing, snapshots: flatten ? null : names },
        );
        if (!existing) await pool.completeVolume('v');
        const model = Buffer.alloc(SIZE);
        for (const [i, pieces] of chain.entries()) {
          apply(model, pieces);
          if (!flatten && i < chain.length - 1) expect(firstDifference(await readAll(await openFrozen(pool, { volume: 'v', snapshot: names[i]! })), model)).toBe(-1);
        }
        expect(r.snapshots).toEqual(flatten ? [] : names);
        expect(pool.catalogNow.snapshots.map((s) => s.name)).toEqual(flatten ? [] : names);
        expect(firstDifference(await readAll(handle()), model)).toBe(-1);
        await pool.close();
      }),
      { numRuns: propertyRuns(30, 10) },
    );
  });

  it('names snapshots after the image files, valid and unique', () => {
    expect(snapshotNames(['/a/base.qcow2', '/b/base.qcow2', '/c/my disk (1).vmdk', '/d/..weird', '/e/-', '/f/BASE.QCOW2'])).toEqual(['base', 'base-2', 'my-disk--1-', 'weird', 'layer', 'BASE']);
  });
});
