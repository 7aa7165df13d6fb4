import fc from 'fast-check';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readClatLog, stretch } from '../../bench/fio-clat.js';
import { writeDataImage } from '../../bench/migrate-data.js';
import { parseMigrateArgs, type MigrateOptions } from '../../bench/migrate.js';
import { scratchDir } from '../support/scratch.js';

const MiB = 1 << 20;
const parse = (...argv: string[]) => parseMigrateArgs(argv) as MigrateOptions;

describe('the migration benchmark options', () => {
  it('has full defaults, and --quick makes every part smaller and shorter', () => {
    const full = parse();
    expect(full).toMatchObject({ parts: ['cold', 'hot'], size: 2048 * MiB, data: 1536 * MiB, hotSize: 512 * MiB, jobs: ['randwrite', 'randrw'], rounds: 3 });
    const quick = parse('--quick');
    expect(quick.size).toBeLessThan(full.size);
    expect(quick.hotSize).toBeLessThan(full.hotSize);
    expect(quick.runtimeSec).toBeLessThan(full.runtimeSec);
    expect(quick).toMatchObject({ rounds: 1, jobs: ['randwrite'] });
    expect(parse('--quick', '--rounds', '2', '--jobs', 'randrw', '--size', '64M', '--data', '32M')).toMatchObject({ rounds: 2, jobs: ['randrw'], size: 64 * MiB, data: 32 * MiB });
    expect(parseMigrateArgs(['--help'])).toBe('help');
  });

  it('refuses what it cannot run, naming the option', () => {
    expect(() => parse('--parts', 'cold,warm')).toThrow(/unknown part 'warm'/);
    expect(() => parse('--jobs', 'randread')).toThrow(/unknown job 'randread'/);
    expect(() => parse('--jobs', 'randrw,randrw')).toThrow(/--jobs names one twice/);
    expect(() => parse('--rounds', '0')).toThrow(/--rounds/);
    expect(() => parse('--size', '1G', '--data', '2G')).toThrow(/--data/);
    expect(() => parse('--hot-size', '10M')).toThrow(/--hot-size/);
    expect(() => parse('--start', '12', '--runtime', '12')).toThrow(/--start/);
    expect(() => parse('--bogus')).toThrow();
  });
});

describe('the migration benchmark data and fio log', () => {
  const scratch = scratchDir('bench-migrate');
  afterAll(() => scratch.cleanup());

  it('writes the asked data in whole extents at places the seed picks, holes elsewhere', () => {
    const file = path.join(scratch.dir, 'data.raw');
    const image = writeDataImage(file, 32 * MiB, 12 * MiB + 5, 7);
    expect(image.dataBytes).toBe(12 * MiB);
    const bytes = fs.readFileSync(file);
    expect(bytes.length).toBe(32 * MiB);
    const zero = Buffer.alloc(MiB);
    const filled = (disk: Buffer) => Array.from({ length: 32 }, (_, e) => !disk.subarray(e * MiB, (e + 1) * MiB).equals(zero));
    const layout = filled(bytes);
    expect(layout.filter(Boolean)).toHaveLength(12);
    writeDataImage(file, 32 * MiB, 12 * MiB, 7);
    expect(filled(fs.readFileSync(file))).toEqual(layout);
  });

  it('cuts IOPS, p99.9 and max latency of a stretch out of a per-I/O log as a plain count does', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 1, max: 1e9 })), { maxLength: 400 }), fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 1, max: 3000 }), (ios, from, len) => {
        const sorted = [...ios].sort((a, b) => a[0] - b[0]);
        const file = path.join(scratch.dir, 'clat.log');
        fs.writeFileSync(file, sorted.map(([t, ns]) => `${t}, ${ns}, 1, 4096, 0\n`).join(''));
        const log = readClatLog(file);
        const s = stretch(log, from, from + len);
        const inside = sorted.filter(([t]) => t >= from && t < from + len).map(([, ns]) => ns).sort((a, b) => a - b);
        expect(s.ios).toBe(inside.length);
        expect(s.maxMs).toBe(inside.length ? inside[inside.length - 1]! / 1e6 : NaN);
        if (inside.length) expect(s.p999Ms).toBeLessThanOrEqual(s.maxMs);
        if (len < 250) expect(s.iops).toBeCloseTo(inside.length / (len / 1000), 6);
        else {
          const windows = Math.floor(len / 250);
          const counts = Array.from({ length: windows }, (_, w) => sorted.filter(([t]) => t >= from + w * 250 && t < from + (w + 1) * 250).length).sort((a, b) => a - b);
          const mid = counts.length >> 1;
          const med = counts.length % 2 ? counts[mid]! : (counts[mid - 1]! + counts[mid]!) / 2;
          expect(s.iops).toBe(med * 4);
        }
      }),
      { numRuns: 100 },
    );
  });
});
