import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ContentRun } from '../../src/image/image-writer.js';
import { openVmdk } from '../../src/image/vmdk/reader.js';
import { writeVmdk } from '../../src/image/vmdk/writer.js';
import { propertyRuns } from '../support/scratch.js';
import { bufferSource, bufferStream, decodeAll, isZero, memoryByteSink, modelContent } from './vmdk-support.js';

const GRAIN = 65536;

/** A disk as runs: data (random bytes, a repeated byte, or zeroes read from a data run), zero runs and holes; now and then past 32 MiB, so that several grain tables are used. */
const disk = fc
  .array(
    fc.record({
      gap: fc.oneof({ arbitrary: fc.integer({ min: 0, max: 300 }), weight: 6 }, { arbitrary: fc.integer({ min: 0, max: 64 * 1024 }), weight: 1 }),
      length: fc.integer({ min: 1, max: 300 }),
      kind: fc.constantFrom<ContentRun['kind']>('data', 'data', 'zero', 'hole'),
      fill: fc.oneof(fc.constant<'random'>('random'), fc.integer({ min: 0, max: 255 })),
      seed: fc.integer(),
    }),
    { minLength: 0, maxLength: 10 },
  )
  .map((pieces) => {
    // Offsets and lengths in sectors; gaps are holes.
    let sector = 0;
    const runs: ContentRun[] = [];
    const fills: { offset: number; length: number; fill: 'random' | number; seed: number }[] = [];
    const push = (offset: number, length: number, kind: ContentRun['kind']): void => {
      const last = runs[runs.length - 1];
      if (last && last.kind === kind) last.length += length;
      else runs.push({ offset, length, kind });
    };
    for (const p of pieces) {
      if (p.gap > 0) push(sector * 512, p.gap * 512, 'hole');
      sector += p.gap;
      push(sector * 512, p.length * 512, p.kind);
      if (p.kind === 'data') fills.push({ offset: sector * 512, length: p.length * 512, fill: p.fill, seed: p.seed });
      sector += p.length;
    }
    const tail = 1 + (pieces.length % 3);
    push(sector * 512, tail * 512, 'hole');
    const bytes = Buffer.alloc((sector + tail) * 512);
    for (const f of fills) {
      if (f.fill === 'random') {
        let x = f.seed | 1;
        for (let i = 0; i < f.length; i++) {
          x ^= x << 13;
          x ^= x >>> 17;
          x ^= x << 5;
          bytes[f.offset + i] = x & 0xff;
        }
      } else bytes.fill(f.fill, f.offset, f.offset + f.length);
    }
    return { bytes, runs };
  });

describe('VMDK write then read', () => {
  it('reads back exactly what was written, in both subformats, from a file and from a stream, holes and zero runs stored as nothing', async () => {
    await fc.assert(
      fc.asyncProperty(disk, fc.constantFrom('monolithicSparse', 'streamOptimized'), fc.integer({ min: 512, max: 100_000 }), async ({ bytes, runs }, subformat, chunk) => {
        const seekable = subformat === 'monolithicSparse' || chunk % 2 === 0;
        const sink = memoryByteSink('disk.vmdk', seekable);
        const result = await writeVmdk(modelContent(bytes, runs), sink, { subformat });
        const image = sink.bytes();
        expect(result.fileSize).toBe(image.length);
        for (const source of [bufferSource(image), bufferStream(image, chunk)]) {
          const reader = await openVmdk(source);
          expect(reader.subformat).toBe(subformat);
          expect(reader.virtualSize).toBe(bytes.length);
          const got = await decodeAll(reader);
          expect(got.bytes.equals(bytes)).toBe(true);
          expect(got.zero).toEqual([]);
          // Only grains with a non-zero byte are stored.
          for (const [offset, length] of got.data) {
            for (let g = offset; g < offset + length; g += GRAIN) expect(isZero(bytes.subarray(g, Math.min(g + GRAIN, bytes.length)))).toBe(false);
          }
        }
        const stored = Math.ceil(bytes.length / GRAIN);
        let expectedData = 0;
        for (let g = 0; g < stored; g++) if (!isZero(bytes.subarray(g * GRAIN, (g + 1) * GRAIN))) expectedData += Math.min(GRAIN, bytes.length - g * GRAIN);
        expect(result.dataBytes).toBe(expectedData);
      }),
      { numRuns: propertyRuns(60, 20) },
    );
  });

  it('refuses monolithicSparse to a stream (naming the subformat that can), an unknown subformat, an empty disk', async () => {
    const bytes = Buffer.alloc(65536, 1);
    await expect(writeVmdk(modelContent(bytes, [{ offset: 0, length: bytes.length, kind: 'data' }]), memoryByteSink('out', false), {})).rejects.toThrow(/cannot be written to a stream \(the streamOptimized subformat can\)/);
    await expect(writeVmdk(modelContent(bytes, []), memoryByteSink('out', true), { subformat: 'twoGbMaxExtentSparse' })).rejects.toThrow(/subformat "twoGbMaxExtentSparse" is not written/);
    await expect(writeVmdk(modelContent(Buffer.alloc(0), []), memoryByteSink('out', true), {})).rejects.toThrow(/out: a VMDK cannot hold a disk of 0 bytes/);
  });

  it('writes the adapter type and its geometry into the descriptor', async () => {
    const bytes = Buffer.alloc(64 * 1024 * 1024);
    const sink = memoryByteSink('d.vmdk', false);
    await writeVmdk(modelContent(bytes, [{ offset: 0, length: bytes.length, kind: 'hole' }]), sink, { subformat: 'streamOptimized', adapterType: 'lsilogic', hwVersion: '7' });
    const text = sink.bytes().toString('latin1', 512, 512 * 21);
    expect(text).toContain('ddb.adapterType = "lsilogic"');
    expect(text).toContain('ddb.geometry.heads = "255"');
    expect(text).toContain('ddb.geometry.cylinders = "8"');
    expect(text).toContain('ddb.virtualHWVersion = "7"');
    expect(text).toContain('RW 131072 SPARSE "d.vmdk"');
  });
});
