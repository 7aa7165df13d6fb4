import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { fileSource } from '../../src/image/byte-source.js';
import { deviceContent } from '../../src/image/device-content.js';
import { deviceSink } from '../../src/image/device-sink.js';
import { fileSink } from '../../src/image/file-sink.js';
import { openImage } from '../../src/image/formats.js';
import { writeRaw } from '../../src/image/raw.js';
import { memoryPool } from '../support/pool.js';
import { propertyRuns, scratchDir } from '../support/scratch.js';

const SIZE = 256 * 1024;
const GRAIN = 4096;

type Report = { kind: 'data'; grain: number; grains: number; fill: number } | { kind: 'zero'; grain: number; grains: number };

const report: fc.Arbitrary<Report> = fc.oneof(
  fc.record({ kind: fc.constant('data' as const), grain: fc.nat(SIZE / GRAIN - 1), grains: fc.integer({ min: 1, max: 8 }), fill: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 255 })) }),
  fc.record({ kind: fc.constant('zero' as const), grain: fc.nat(SIZE / GRAIN - 1), grains: fc.integer({ min: 1, max: 8 }) }),
);

describe('device sink', () => {
  it('sends consecutive small ranges to the device as one write, and what follows a gap as another', async () => {
    const dev = new MemoryDevice({ size: SIZE });
    const writes: [number, number][] = [];
    const write = dev.write.bind(dev);
    dev.write = (buf, offset) => (writes.push([offset, buf.length]), write(buf, offset));
    const sink = deviceSink(dev, { readsZeroes: true });
    for (let g = 0; g < 16; g++) await sink.data(g * GRAIN, Buffer.alloc(GRAIN, g + 1));
    for (let g = 20; g < 24; g++) await sink.data(g * GRAIN, Buffer.alloc(GRAIN, g + 1));
    await sink.drain();
    expect(writes).toEqual([
      [0, 16 * GRAIN],
      [20 * GRAIN, 4 * GRAIN],
    ]);
    const got = Buffer.alloc(24 * GRAIN);
    await dev.read(got, 0);
    for (let g = 0; g < 24; g++) expect(got[g * GRAIN]).toBe(g < 16 || g >= 20 ? g + 1 : 0);
  });

  it('leaves the device holding what was reported, over what it held, with writes in flight', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(report, { maxLength: 30 }), fc.boolean(), fc.integer({ min: 0, max: 64 * 1024 }), async (reports, prefilled, inFlightBytes) => {
        const dev = new MemoryDevice({ size: SIZE });
        const model = Buffer.alloc(SIZE);
        if (prefilled) {
          model.fill(0xee);
          await dev.write(model, 0);
        }
        const sink = deviceSink(dev, { readsZeroes: !prefilled, inFlightBytes });
        // Each report covers its own grains: a reader reports every range once.
        const taken = new Set<number>();
        for (const r of reports) {
          const grains = Array.from({ length: Math.min(r.grains, SIZE / GRAIN - r.grain) }, (_, i) => r.grain + i);
          if (grains.some((g) => taken.has(g))) continue;
          for (const g of grains) taken.add(g);
          const offset = r.grain * GRAIN;
          const length = grains.length * GRAIN;
          if (r.kind === 'zero') {
            model.fill(0, offset, offset + length);
            await sink.zero(offset, length);
          } else {
            const buf = Buffer.alloc(length, r.fill);
            model.fill(r.fill, offset, offset + length);
            await sink.data(offset, buf);
          }
        }
        await sink.drain();
        const got = Buffer.alloc(SIZE);
        await dev.read(got, 0);
        expect(got.equals(model)).toBe(true);
      }),
      { numRuns: propertyRuns(100) },
    );
  });

  it('refuses a report past the end of the device, naming it', async () => {
    const dev = new MemoryDevice({ size: SIZE, name: 'vol' });
    const sink = deviceSink(dev, { readsZeroes: true });
    await expect(sink.data(SIZE - 512, Buffer.alloc(1024))).rejects.toThrow(/past the end of vol/);
  });

  it('hands a write failure to drain', async () => {
    const dev = new MemoryDevice({ size: SIZE });
    await dev.close();
    const sink = deviceSink(dev, { readsZeroes: true });
    await sink.data(0, Buffer.alloc(GRAIN, 1));
    await expect(sink.drain()).rejects.toThrow();
  });

  it('round-trips a volume through the raw writer and reader, holes staying holes', async () => {
    const { dir, cleanup } = scratchDir('strata-raw-');
    try {
      const { pool } = await memoryPool();
      await pool.createVolume('a', 4 * 1024 * 1024);
      const vol = await pool.openVolume('a');
      await vol.write(Buffer.alloc(65536, 3), 1024 * 1024);
      await vol.write(Buffer.alloc(65536, 9), 3 * 1024 * 1024);
      const file = path.join(dir, 'a.raw');
      const fd = fs.openSync(file, 'w');
      const { dataBytes } = await writeRaw(deviceContent(vol), fileSink(fd, file), {});
      fs.closeSync(fd);
      expect(dataBytes).toBe(2 * 65536);
      expect(fs.statSync(file).size).toBe(4 * 1024 * 1024);
      expect(fs.statSync(file).blocks * 512).toBeLessThan(1024 * 1024);
      await pool.createVolume('b', 4 * 1024 * 1024);
      const b = await pool.openVolume('b');
      const src = fileSource(file);
      const reader = await openImage(src);
      expect(reader.format).toBe('raw');
      const sink = deviceSink(b, { readsZeroes: true });
      await reader.decode(sink);
      await sink.drain();
      expect(sink.stats.dataBytes).toBe(2 * 65536);
      const x = Buffer.alloc(vol.size);
      const y = Buffer.alloc(vol.size);
      await vol.read(x, 0);
      await b.read(y, 0);
      expect(x.equals(y)).toBe(true);
      await src.close();
      await pool.close();
    } finally {
      cleanup();
    }
  });
});
