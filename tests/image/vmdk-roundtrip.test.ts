import fc from 'fast-check';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { ContentRun } from '../../src/image/image-writer.js';
import { GrainLog } from '../../src/image/vmdk/grain-log.js';
import { encodeHeader, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_TEST, FLAG_ZEROED_GRAIN, GD_AT_END } from '../../src/image/vmdk/header.js';
import { grainRecord, MARKER_FOOTER, MARKER_GD, MARKER_GT, metadataMarker } from '../../src/image/vmdk/markers.js';
import { openVmdk } from '../../src/image/vmdk/reader.js';
import { writeVmdk } from '../../src/image/vmdk/writer.js';
import { propertyRuns } from '../support/scratch.js';
import { bufferContent, isZero } from './support/content.js';
import { decodeAll } from './support/decode.js';
import { memoryByteSink } from './support/sinks.js';
import { bufferSource, bufferStream } from './support/sources.js';

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
        const result = await writeVmdk(bufferContent(bytes, runs), sink, { subformat });
        const image = sink.bytes();
        expect(result.fileSize).toBe(image.length);
        for (const source of [bufferSource(image, 'image.vmdk'), bufferStream(image, chunk)]) {
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
      { numRuns: propertyRuns(40, 15) },
    );
  });

  it('refuses monolithicSparse to a stream (naming the subformat that can), an unknown subformat, an empty disk', async () => {
    const bytes = Buffer.alloc(65536, 1);
    await expect(writeVmdk(bufferContent(bytes, [{ offset: 0, length: bytes.length, kind: 'data' }]), memoryByteSink('out', false), {})).rejects.toThrow(/cannot be written to a stream \(the streamOptimized subformat can\)/);
    await expect(writeVmdk(bufferContent(bytes, []), memoryByteSink('out', true), { subformat: 'twoGbMaxExtentSparse' })).rejects.toThrow(/subformat "twoGbMaxExtentSparse" is not written/);
    await expect(writeVmdk(bufferContent(Buffer.alloc(0), []), memoryByteSink('out', true), {})).rejects.toThrow(/out: a VMDK cannot hold a disk of 0 bytes/);
  });

  it('writes the adapter type and its geometry into the descriptor', async () => {
    const bytes = Buffer.alloc(64 * 1024 * 1024);
    const sink = memoryByteSink('d.vmdk', false);
    await writeVmdk(bufferContent(bytes, [{ offset: 0, length: bytes.length, kind: 'hole' }]), sink, { subformat: 'streamOptimized', adapterType: 'lsilogic', hwVersion: '7' });
    const text = sink.bytes().toString('latin1', 512, 512 * 21);
    expect(text).toContain('ddb.adapterType = "lsilogic"');
    expect(text).toContain('ddb.geometry.heads = "255"');
    expect(text).toContain('ddb.geometry.cylinders = "8"');
    expect(text).toContain('ddb.virtualHWVersion = "7"');
    expect(text).toContain('RW 131072 SPARSE "d.vmdk"');
  });
});

describe('VMDK zero grains in a stream', () => {
  it('reports zeroed-grain entries of a VMware-style stream as zero ranges, also in a table that holds no grain, and reads a bare deflate grain', async () => {
    const grainData = Buffer.alloc(GRAIN, 0x3c);
    const capacity = (64 * 1024 * 1024) / 512;
    const header = {
      version: 3,
      flags: FLAG_NEWLINE_TEST | FLAG_ZEROED_GRAIN | FLAG_COMPRESSED | FLAG_MARKERS,
      capacity,
      grainSize: 128,
      descriptorOffset: 1,
      descriptorSize: 20,
      numGTEsPerGT: 512,
      rgdOffset: 0,
      gdOffset: GD_AT_END,
      overHead: 128,
      uncleanShutdown: false,
      newlinesIntact: true,
      compressAlgorithm: 1,
    };
    const parts: Buffer[] = [];
    let sector = 0;
    const put = (buf: Buffer): number => {
      parts.push(buf);
      const at = sector;
      sector += buf.length / 512;
      return at;
    };
    const descriptor = Buffer.alloc(20 * 512);
    descriptor.write(`# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType="streamOptimized"\nRW ${capacity} SPARSE "z.vmdk"\n`, 'latin1');
    put(encodeHeader(header));
    put(descriptor);
    put(Buffer.alloc((128 - 21) * 512));
    // A bare deflate stream, as the specification's wording allows (VMware and qemu write zlib streams).
    const grainAt = put(grainRecord(0, zlib.deflateRawSync(grainData)));
    const table = (entries: [number, number][]): number => {
      put(metadataMarker(MARKER_GT, 4));
      const gt = Buffer.alloc(2048);
      for (const [j, v] of entries) gt.writeUInt32LE(v, j * 4);
      return put(gt);
    };
    const gt0 = table([
      [0, grainAt],
      [5, 1],
    ]);
    const gt1 = table([
      [0, 1],
      [1, 1],
    ]);
    put(metadataMarker(MARKER_GD, 1));
    const gd = Buffer.alloc(512);
    gd.writeUInt32LE(gt0, 0);
    gd.writeUInt32LE(gt1, 4);
    const gdAt = put(gd);
    put(metadataMarker(MARKER_FOOTER, 1));
    put(encodeHeader({ ...header, gdOffset: gdAt }));
    put(Buffer.alloc(512));
    const img = Buffer.concat(parts);
    for (const source of [bufferSource(img, 'image.vmdk'), bufferStream(img, 1000)]) {
      const got = await decodeAll(await openVmdk(source));
      expect(got.data).toEqual([[0, GRAIN]]);
      expect(got.zero.sort((a, b) => a[0] - b[0])).toEqual([
        [5 * GRAIN, GRAIN],
        [512 * GRAIN, GRAIN],
        [513 * GRAIN, GRAIN],
      ]);
      expect(got.bytes.subarray(0, GRAIN).equals(grainData)).toBe(true);
    }
  });
});

describe('the grain log of a stream', () => {
  it('answers claims as a map of sector to grain does, each grain claimed once, across growth and compaction', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.nat(3000)), { maxLength: 6000 }), (steps) => {
        const log = new GrainLog();
        const model = new Map<number, number>();
        let sector = 0;
        for (const [add, pick] of steps) {
          if (add) {
            sector += 1 + (pick % 3);
            log.add(sector, pick);
            model.set(sector, pick);
          } else {
            const target = sector - (pick % (sector + 1));
            const want = model.get(target);
            expect(log.claim(target)).toBe(want ?? null);
            model.delete(target);
          }
        }
        const first = [...model.keys()].sort((a, b) => a - b)[0];
        expect(log.unclaimed()).toEqual(first === undefined ? null : { sector: first, grain: model.get(first) });
      }),
      { numRuns: propertyRuns(100, 30) },
    );
  });
});
