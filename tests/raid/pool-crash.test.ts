import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CrashSimulator, MemoryDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { assembleArray, createArray } from '../../src/raid/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';
import { CHUNK, label, memberSize, subsets, type LevelCase } from './helpers.js';

const ARRAY = 2 << 20;
const VOL = 256 * 1024;
const POOL = { clusterSize: 4096, journalBytes: 96 * 1024, doubleWriteBytes: 17 * 4096 };
const CASES: LevelCase[] = [
  { level: 1, members: 2, tolerates: 1 },
  { level: 5, members: 3, tolerates: 1 },
  { level: 6, members: 4, tolerates: 2 },
];

type Op = { op: 'write'; at: number; len: number; seed: number } | { op: 'zero'; at: number; len: number } | { op: 'flush' };

const span = fc.integer({ min: 0, max: VOL - 1 }).chain((at) => fc.record({ at: fc.constant(at), len: fc.integer({ min: 1, max: Math.min(20_000, VOL - at) }) }));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ s: span, seed: fc.integer() }).map(({ s, seed }) => ({ op: 'write' as const, ...s, seed })) },
  { weight: 2, arbitrary: span.map((s) => ({ op: 'zero' as const, ...s })) },
  { weight: 2, arbitrary: fc.constant({ op: 'flush' as const }) },
);

async function image(dev: BlockDevice): Promise<Buffer> {
  const b = Buffer.alloc(dev.size);
  await dev.read(b, 0);
  return b;
}

async function readVolume(pool: Pool): Promise<Buffer> {
  const vol = await pool.openVolume('v');
  const b = Buffer.alloc(VOL);
  await vol.read(b, 0);
  await vol.close();
  return b;
}

/**
 * A pool on an array whose every member loses power at once, with the pool's
 * metadata and data writes since the last flush each kept, dropped or torn on
 * each member independently. The array assembles and resyncs what its bitmap
 * marks, the pool replays its journal, `check` is clean, flushed bytes read
 * back and the rest old or new; then losing any members the level tolerates
 * changes nothing that is read (the write hole is closed under the pool too).
 */
describe('a pool on RAID through power loss', () => {
  for (const c of CASES) {
    it(`${label(c)}: the pool reopens clean, flushed data intact, and survives losing any ${c.tolerates} member(s) afterwards`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 20 }), fc.integer({ min: 1, max: 1_000_000 }), async (ops, crashSeed) => {
          const sims = Array.from({ length: c.members }, (_, i) => new CrashSimulator(new MemoryDevice({ size: memberSize(c, ARRAY), name: `m${i}` })));
          const array = await createArray({ level: c.level, members: sims, chunk: CHUNK, size: ARRAY, bitmapRegion: 2 * CHUNK, name: 'p' });
          const pool = await Pool.create(array, POOL);
          await pool.createVolume('v', VOL);
          const vol = await pool.openVolume('v');
          const durable = new Uint8Array(VOL);
          const current = new Uint8Array(VOL);
          const since = new Map<number, Set<number>>();
          for (const o of ops) {
            if (o.op === 'flush') {
              await vol.flush();
              durable.set(current);
              since.clear();
              continue;
            }
            const data = o.op === 'write' ? pattern(o.len, o.seed) : new Uint8Array(o.len);
            for (let i = 0; i < o.len; i++) {
              const k = o.at + i;
              let s = since.get(k);
              if (!s) since.set(k, (s = new Set([durable[k]!])));
              s.add(data[i]!);
              current[k] = data[i]!;
            }
            if (o.op === 'write') await vol.write(data, o.at);
            else await vol.writeZeroes(o.at, o.len);
          }
          const survivors = await Promise.all(sims.map(async (s, i) => (await s.crash(crashSeed * 31 + i)).device));
          const { array: again } = await assembleArray(survivors);
          const reopened = await Pool.open(again);
          expect((await reopened.check()).problems, 'check after the crash').toEqual([]);
          const settled = await readVolume(reopened);
          for (let i = 0; i < VOL; i++) {
            const allowed = since.get(i) ?? new Set([durable[i]!]);
            if (!allowed.has(settled[i]!)) expect.fail(`byte ${i} reads ${settled[i]} after the crash; allowed ${[...allowed].join(',')}`);
          }
          await reopened.store.checkpoint();
          const images = await Promise.all(survivors.map(image));
          await reopened.close();
          for (const lost of subsets(c.members, c.tolerates)) {
            const rest = images.flatMap((img, i) => {
              if (lost.includes(i)) return [];
              const m = new MemoryDevice({ size: img.length, name: `m${i}` });
              m.writeSync(img, 0);
              return [m];
            });
            const { array: degraded } = await assembleArray(rest);
            const pool2 = await Pool.open(degraded);
            expect(Buffer.compare(await readVolume(pool2), settled), `after losing member(s) ${lost}`).toBe(0);
            expect((await pool2.check()).problems, `check after losing member(s) ${lost}`).toEqual([]);
            await pool2.close();
          }
        }),
        { numRuns: propertyRuns(120, 25) },
      );
    }, 600_000);
  }
});
