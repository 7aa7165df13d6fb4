import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CrashSimulator, MemoryDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { assembleArray, createArray, type RaidArray } from '../../src/raid/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';
import { CHUNK, label, memberSize, subsets, type LevelCase } from './helpers.js';

const SIZE = 64 * 1024;
const CASES: LevelCase[] = [
  { level: 1, members: 2, tolerates: 1 },
  { level: 5, members: 4, tolerates: 1 },
  { level: 6, members: 5, tolerates: 2 },
  { level: 10, members: 4, copies: 2, tolerates: 1 },
];

interface Pending {
  offset: number;
  data: Buffer;
}

async function contents(dev: BlockDevice): Promise<Buffer> {
  const b = Buffer.alloc(dev.size);
  await dev.read(b, 0);
  return b;
}

function copyOf(image: Buffer, name: string): MemoryDevice {
  const m = new MemoryDevice({ size: image.length, name });
  m.writeSync(image, 0);
  return m;
}

async function crashedArray(sims: CrashSimulator[], seed: number): Promise<BlockDevice[]> {
  return Promise.all(sims.map(async (s, i) => (await s.crash(seed * 31 + i)).device));
}

/** Every byte not written since the last flush is the flushed value; every other byte is the old value or one of the pending writes'. */
function checkAfterCrash(read: Buffer, committed: Uint8Array, pending: Pending[]): void {
  for (let b = 0; b < read.length; b++) {
    const v = read[b]!;
    if (v === committed[b]) continue;
    const ok = pending.some((p) => b >= p.offset && b < p.offset + p.data.length && p.data[b - p.offset] === v);
    if (!ok) expect.fail(`byte ${b} reads ${v}: neither the flushed value ${committed[b]} nor any unflushed write's`);
  }
}

describe('power loss on every member mid-write', () => {
  for (const c of CASES) {
    it(`${label(c)}: assembles, resyncs the dirty regions, then survives the loss of any ${c.tolerates} member(s) with data intact`, async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.oneof(
              fc.record({ offset: fc.integer({ min: 0, max: SIZE - 1 }), length: fc.integer({ min: 1, max: 3 * CHUNK }), seed: fc.integer() }),
              fc.constant('flush' as const),
            ),
            { minLength: 1, maxLength: 25 },
          ),
          fc.integer({ min: 1, max: 1_000_000 }),
          async (ops, crashSeed) => {
            const sims = Array.from({ length: c.members }, (_, i) => new CrashSimulator(new MemoryDevice({ size: memberSize(c, SIZE), name: `m${i}` })));
            const array = await createArray({ level: c.level, members: sims, chunk: CHUNK, size: SIZE, bitmapRegion: 2 * CHUNK, ...(c.copies ? { copies: c.copies } : {}) });
            const committed = new Uint8Array(SIZE);
            const model = new Uint8Array(SIZE);
            let pending: Pending[] = [];
            for (const o of ops) {
              if (o === 'flush') {
                await array.flush();
                committed.set(model);
                pending = [];
                continue;
              }
              const length = Math.min(o.length, SIZE - o.offset);
              const data = pattern(length, o.seed);
              await array.write(data, o.offset);
              model.set(data, o.offset);
              pending.push({ offset: o.offset, data });
            }
            const survivors = await crashedArray(sims, crashSeed);
            const { array: again } = await assembleArray(survivors);
            const settled = await contents(again);
            checkAfterCrash(settled, committed, pending);
            await again.flush();
            const images = await Promise.all(survivors.map(contents));
            await again.close();

            for (const lost of subsets(c.members, c.tolerates)) {
              const rest = images.map((img, i) => (lost.includes(i) ? undefined : copyOf(img, `m${i}`))).filter((d): d is MemoryDevice => d !== undefined);
              const { array: degraded } = await assembleArray(rest);
              const read = await contents(degraded);
              expect(Buffer.compare(read, settled), `after losing member(s) ${lost}`).toBe(0);
              await degraded.close();
            }
          },
        ),
        { numRuns: propertyRuns(200) },
      );
    }, 120_000);
  }

  it('resyncs only the regions written since they were last clean', async () => {
    const c: LevelCase = { level: 5, members: 4, tolerates: 1 };
    const sims = Array.from({ length: 4 }, (_, i) => new CrashSimulator(new MemoryDevice({ size: memberSize(c, SIZE), name: `m${i}` })));
    const array = await createArray({ level: 5, members: sims, chunk: CHUNK, size: SIZE, bitmapRegion: CHUNK });
    await array.write(pattern(100, 1), 0);
    await array.flush();
    await array.flush();
    expect(array.dirtyRegions()).toEqual([]);
    // Stripe 3 is rows 3 of every member: one region of one row.
    await array.write(pattern(5000, 2), 3 * 3 * CHUNK + 10);
    expect(array.dirtyRegions()).toEqual([3]);
    const survivors = await crashedArray(sims, 5);
    const { array: again, warnings } = await assembleArray(survivors);
    expect(warnings.some((w) => /resynced 1 dirty region/.test(w))).toBe(true);
    expect(again.status().counters.resyncedRegions).toBe(1);
    expect(again.dirtyRegions()).toEqual([]);
    await again.close();
  });

  it('a rebuild cut short by power loss resumes from its checkpoint', async () => {
    const c: LevelCase = { level: 6, members: 5, tolerates: 2 };
    const size = 256 * 1024;
    const ms = memberSize(c, size);
    const sims = Array.from({ length: 6 }, (_, i) => new CrashSimulator(new MemoryDevice({ size: ms, name: `m${i}` })));
    const array: RaidArray = await createArray({ level: 6, members: sims.slice(0, 5), chunk: CHUNK, size });
    const data = pattern(size, 99);
    await array.write(data, 0);
    await array.flush();
    await array.fail(1);
    await array.replace(1, sims[5]!);
    let crashAt = -1;
    const rebuilding = array.rebuild({
      stepRows: 1,
      checkpointMs: 0,
      onProgress: (p) => {
        if (p.rowsDone === 10 && crashAt < 0) crashAt = p.rowsDone;
      },
    });
    while (crashAt < 0) await new Promise((r) => setImmediate(r));
    const survivors = await Promise.all(sims.map(async (s, i) => (i === 1 ? undefined : (await s.crash(i + 1)).device)));
    await rebuilding.catch(() => undefined);
    const { array: again, warnings } = await assembleArray(survivors.filter((d): d is BlockDevice => d !== undefined));
    const st = again.status().members[1]!;
    expect(st.state, warnings.join('; ')).toBe('rebuilding');
    expect(st.rebuilt).toBeGreaterThan(0);
    expect(st.rebuilt).toBeLessThan(1);
    let first = -1;
    await again.rebuild({ onProgress: (p) => void (first < 0 && (first = p.rowsDone)), stepRows: 1 });
    expect(first).toBeGreaterThan(9);
    expect(again.status().state).toBe('optimal');
    expect(Buffer.compare(await contents(again), data)).toBe(0);
    // The rebuilt member carries real data: lose two others and read it all back.
    await again.fail(0);
    await again.fail(2);
    expect(Buffer.compare(await contents(again), data)).toBe(0);
    await again.close();
  });
});
