import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sparseImage } from './image.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { buildCli, fails, strata } from './strata.js';
import { propertyRuns, scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-map');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
let n = 0;
async function poolHome(): Promise<string> {
  const home = path.join(scratch.dir, `home${n++}`);
  await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
  return home;
}

interface Run {
  offset: number;
  length: number;
  type: 'data' | 'zero' | 'hole';
  zero: boolean;
  hole: boolean;
}

/** The map's own promises: runs in order, covering the volume exactly, merged, and types that agree with the flags. */
function checkShape(runs: Run[], size: number): void {
  let pos = 0;
  for (const [i, r] of runs.entries()) {
    expect(r.offset).toBe(pos);
    expect(r.length).toBeGreaterThan(0);
    expect(r.type).toBe(!r.zero ? 'data' : r.hole ? 'hole' : 'zero');
    if (i > 0) expect([runs[i - 1]!.zero, runs[i - 1]!.hole]).not.toEqual([r.zero, r.hole]);
    pos += r.length;
  }
  expect(pos).toBe(size);
}

describe('strata map', () => {
  it('shows a new volume as one hole', async () => {
    const home = await poolHome();
    // 10G on a 1G pool overcommits it: the create succeeds with a warning on stderr.
    expect(strata(home, ['volume', 'create', 'p0/v', '10G']).code).toBe(0);
    expect(await inProcessJson(home, ['map', 'p0/v'])).toEqual([{ offset: 0, length: 10 * 1024 ** 3, type: 'hole', zero: true, hole: true }]);
    expect(await inProcess(home, ['map', 'p0/v'])).toBe(
      ['OFFSET       LENGTH  TYPE  SIZE', '     0  10737418240  hole   10G', 'p0/v: data 0, zero 0, hole 10G', ''].join('\n'),
    );
  });

  it('shows written ranges as data and the rest as holes, aligned', async () => {
    const home = await poolHome();
    const img = path.join(home, 'img.raw');
    const fd = fs.openSync(img, 'w');
    fs.ftruncateSync(fd, 16 << 20);
    fs.writeSync(fd, Buffer.alloc(1 << 20, 1), 0, 1 << 20, 4 << 20);
    fs.writeSync(fd, Buffer.alloc(64 << 10, 2), 0, 64 << 10, 10 << 20);
    fs.closeSync(fd);
    await inProcess(home, ['import', 'p0/v', img]);
    expect((await inProcessJson<Run[]>(home, ['map', 'p0/v'])).map((r) => [r.offset, r.length, r.type])).toEqual([
      [0, 4 << 20, 'hole'],
      [4 << 20, 1 << 20, 'data'],
      [5 << 20, 5 << 20, 'hole'],
      [10 << 20, 64 << 10, 'data'],
      [(10 << 20) + (64 << 10), (6 << 20) - (64 << 10), 'hole'],
    ]);
    const lines = (await inProcess(home, ['map', 'p0/v'])).trimEnd().split('\n');
    expect(lines[0]).toBe('  OFFSET   LENGTH  TYPE   SIZE');
    expect(lines[2]).toBe(' 4194304  1048576  data     1M');
    expect(lines[4]).toBe('10485760    65536  data    64K');
    expect(lines.at(-1)).toBe('p0/v: data 1.06M, zero 0, hole 14.9M');
  });

  it('maps every nonzero byte of a random image as data, and data stays near what was written', async () => {
    const home = await poolHome();
    const cluster = (await inProcessJson<{ subclusterSize: number }>(home, ['pool', 'info', 'p0'])).subclusterSize;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 2 ** 31 }), fc.integer({ min: 1, max: 24 << 20 }), async (seed, size) => {
        const img = path.join(home, `r${n++}.raw`);
        const segments = sparseImage(img, size, seed, 2 << 20);
        const vol = `p0/r${n}`;
        await inProcess(home, ['import', vol, img]);
        const runs = await inProcessJson<Run[]>(home, ['map', vol]);
        // Volumes are whole 512-byte sectors: an image of any other size is padded with zeroes.
        checkShape(runs, Math.ceil(size / 512) * 512);
        const data = fs.readFileSync(img);
        const dataAt = (i: number): boolean => runs.some((r) => r.type === 'data' && r.offset <= i && i < r.offset + r.length);
        for (const s of segments.filter((x) => x.kind === 'data')) {
          // Spot checks: first and last nonzero byte of each data segment, and a few between.
          for (const i of [s.offset, s.offset + s.length - 1, s.offset + (s.length >> 1)]) if (data[i] !== 0) expect(dataAt(i)).toBe(true);
        }
        const mapped = runs.filter((r) => r.type === 'data').reduce((t, r) => t + r.length, 0);
        const written = segments.filter((x) => x.kind === 'data').reduce((t, s) => t + s.length + 2 * cluster, 0);
        expect(mapped).toBeLessThanOrEqual(written);
        await inProcess(home, ['volume', 'delete', vol]);
        fs.rmSync(img);
      }),
      { numRuns: propertyRuns(12, 4) },
    );
  });

  it('names an unknown volume or pool in one line', async () => {
    const home = await poolHome();
    // The process itself: exit 1 and one line on stderr.
    expect(fails(home, ['map', 'p0/nope'])).toBe("strata: volume 'nope' not found in pool 'p0'");
    expect(await inProcessFails(home, ['map', 'p9/v'])).toBe(`pool 'p9' not found in ${home}`);
    expect(await inProcessFails(home, ['map', 'p0'])).toMatch(/^invalid volume 'p0'/);
  });
});
