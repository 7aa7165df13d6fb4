import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice, Rng } from '../../src/blockdev/index.js';
import { Pool, type Volume } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { reopenable } from '../support/pool.js';
import { propertyRuns } from '../support/scratch.js';

type Op =
  | { op: 'write'; at: number; len: number; seed: number; fua: boolean }
  | { op: 'read'; at: number; len: number }
  | { op: 'zero'; at: number; len: number; unmap: boolean }
  | { op: 'discard'; at: number; len: number }
  | { op: 'flush' }
  | { op: 'reopen' }
  | { op: 'grow'; by: number }
  | { op: 'shrink'; by: number };

/** Offsets and lengths as fractions, so they stay valid while the volume grows and shrinks. */
const frac = fc.double({ min: 0, max: 1, noNaN: true });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ at: frac, len: fc.integer({ min: 1, max: 200_000 }), seed: fc.integer(), fua: fc.boolean() }).map((r) => ({ op: 'write' as const, ...r, at: r.at })) },
  { weight: 3, arbitrary: fc.record({ at: frac, len: fc.integer({ min: 1, max: 200_000 }) }).map((r) => ({ op: 'read' as const, ...r })) },
  { weight: 2, arbitrary: fc.record({ at: frac, len: fc.integer({ min: 1, max: 300_000 }), unmap: fc.boolean() }).map((r) => ({ op: 'zero' as const, ...r })) },
  { weight: 2, arbitrary: fc.record({ at: frac, len: fc.integer({ min: 1, max: 300_000 }) }).map((r) => ({ op: 'discard' as const, ...r })) },
  { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 400 }).map((k) => ({ op: 'grow' as const, by: k * 512 })) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 100 }).map((k) => ({ op: 'shrink' as const, by: k * 512 })) },
) as fc.Arbitrary<Op>;

describe('volume against a plain byte array', () => {
  it('matches the model through writes, zeroes, discards, resizes, flushes and reopens; check stays clean', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(4096, 65536), fc.array(opArb, { minLength: 1, maxLength: 40 }), async (clusterSize, ops) => {
        const dev = new MemoryDevice({ size: 24 << 20 });
        const opts = { cacheBytes: 6 * clusterSize, journalBytes: 128 * 1024 };
        let pool = await Pool.create(reopenable(dev), { clusterSize, ...opts });
        let size = 512 * 1024;
        await pool.createVolume('v', size);
        let vol: Volume = await pool.openVolume('v');
        let model = new Uint8Array(size);
        const span = (f: number, len: number): [number, number] => {
          const at = Math.min(size - 1, Math.floor(f * size));
          return [at, Math.min(len, size - at)];
        };
        for (const o of ops) {
          switch (o.op) {
            case 'write': {
              const [at, len] = span(o.at, o.len);
              const data = pattern(len, o.seed);
              await vol.write(data, at, { fua: o.fua });
              model.set(data, at);
              break;
            }
            case 'read': {
              const [at, len] = span(o.at, o.len);
              const buf = Buffer.alloc(len);
              await vol.read(buf, at);
              expect(Buffer.compare(buf, model.subarray(at, at + len)), `read ${at}+${len}`).toBe(0);
              break;
            }
            case 'zero':
            case 'discard': {
              const [at, len] = span(o.at, o.len);
              if (o.op === 'zero') await vol.writeZeroes(at, len, { mayUnmap: o.unmap });
              else await vol.discard(at, len);
              model.fill(0, at, at + len);
              break;
            }
            case 'flush':
              await vol.flush();
              break;
            case 'reopen':
              await vol.close();
              await pool.close();
              pool = await Pool.open(reopenable(dev), opts);
              vol = await pool.openVolume('v');
              break;
            case 'grow':
            case 'shrink': {
              const next = o.op === 'grow' ? size + o.by : Math.max(512, size - o.by);
              await pool.resizeVolume('v', next, { force: true });
              const m = new Uint8Array(next);
              m.set(model.subarray(0, Math.min(size, next)));
              model = m;
              size = next;
              expect(vol.size).toBe(size);
              break;
            }
          }
        }
        const all = Buffer.alloc(size);
        await vol.read(all, 0);
        expect(Buffer.compare(all, model), 'whole volume').toBe(0);
        await vol.close();
        const report = await pool.check();
        expect(report.problems).toEqual([]);
        await pool.close();
      }),
      { numRuns: propertyRuns(400) },
    );
  }, 600_000);

  it('grows online while writes land everywhere, even when the L1 table must move and is not all in memory', async () => {
    // 4 KiB clusters: an L1 block covers 510 tables of 204 clusters (about 407 MiB); growing past that moves the L1.
    const l1Span = 510 * 204 * 4096;
    const dev = new MemoryDevice({ size: 64 << 20 });
    const pool = await Pool.create(dev, { clusterSize: 4096, cacheBytes: 8 * 4096 });
    await pool.createVolume('v', l1Span + (1 << 20));
    const vol = await pool.openVolume('v');
    const rng = new Rng(3);
    const written = new Map<number, Buffer>();
    const writer = async (n: number): Promise<void> => {
      for (let k = 0; k < n; k++) {
        const at = rng.below((l1Span + (1 << 20)) / 4096) * 4096;
        const data = pattern(4096, k * 31 + at);
        written.set(at, data);
        await vol.write(data, at);
      }
    };
    for (const size of [2 * l1Span, 3 * l1Span + (5 << 20)]) {
      await Promise.all([writer(150), pool.resizeVolume('v', size), writer(150)]);
    }
    const back = Buffer.alloc(4096);
    for (const [at, data] of written) {
      await vol.read(back, at);
      expect(back.equals(data), `data at ${at}`).toBe(true);
    }
    await vol.close();
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
  });

  it('refuses to shrink over data without force, and names what would be lost', async () => {
    const pool = await Pool.create(new MemoryDevice({ size: 16 << 20 }));
    await pool.createVolume('v', 1 << 20);
    const vol = await pool.openVolume('v');
    await vol.write(Buffer.alloc(4096, 1), 900 * 1024);
    await expect(pool.resizeVolume('v', 512 * 1024)).rejects.toThrow(/would discard 4096 allocated bytes.*with force/);
    await pool.resizeVolume('v', 950 * 1024 - (950 * 1024) % 512);
    await vol.close();
    await pool.close();
  });
});

