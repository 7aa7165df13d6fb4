import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CrashSimulator, MemoryDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';

const VOL = 96 * 1024;

type Op =
  | { op: 'write'; at: number; len: number; seed: number; fua: boolean }
  | { op: 'zero'; at: number; len: number; discard: boolean }
  | { op: 'flush' };

const span = fc.integer({ min: 0, max: VOL - 1 }).chain((at) => fc.record({ at: fc.constant(at), len: fc.integer({ min: 1, max: Math.min(40_000, VOL - at) }) }));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ s: span, seed: fc.integer(), fua: fc.boolean() }).map(({ s, seed, fua }) => ({ op: 'write' as const, ...s, seed, fua })) },
  { weight: 2, arbitrary: fc.record({ s: span, discard: fc.boolean() }).map(({ s, discard }) => ({ op: 'zero' as const, ...s, discard })) },
  { weight: 2, arbitrary: fc.constant({ op: 'flush' as const }) },
);

/**
 * Power loss at a random instant of a random workload — between requests or
 * in the middle of a commit or checkpoint — then reopen: the journal replays,
 * `check` is clean, every byte flushed (or written with FUA) reads back, and
 * every other byte reads either what was there at the last flush or a value
 * written since: never anything else, never a checksum error.
 */
describe('pool crash consistency', () => {
  it('survives power loss anywhere: check clean, flushed data intact, the rest old or new', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(4096, 16384, 65536),
        fc.array(opArb, { minLength: 1, maxLength: 25 }),
        fc.integer({ min: 0, max: 400 }),
        fc.integer(),
        async (clusterSize, ops, cutAfter, seed) => {
          // Small devices, so that freed clusters come round again for reuse within one workload.
          const base = new MemoryDevice({ size: { 4096: 1536, 16384: 2048, 65536: 3072 }[clusterSize]! * 1024 });
          const opts = { cacheBytes: 8 * clusterSize, journalBytes: 96 * 1024 };
          {
            const pool = await Pool.create(base, { clusterSize, ...opts });
            await pool.createVolume('v', VOL);
            await pool.store.checkpoint();
          }
          const sim = new CrashSimulator(base);
          const pool = await Pool.open(sim, opts);
          const vol = await pool.openVolume('v');
          sim.cutAfter(cutAfter);
          const durable = new Uint8Array(VOL);
          const current = new Uint8Array(VOL);
          const since = new Map<number, Set<number>>();
          const note = (at: number, value: number, fua: boolean): void => {
            current[at] = value;
            if (fua) {
              durable[at] = value;
              since.delete(at);
              return;
            }
            let s = since.get(at);
            if (!s) since.set(at, (s = new Set([durable[at]!])));
            s.add(value);
          };
          try {
            for (const o of ops) {
              if (o.op === 'flush') {
                await vol.flush();
                durable.set(current);
                since.clear();
              } else if (o.op === 'write') {
                const data = pattern(o.len, o.seed);
                const p = vol.write(data, o.at, { fua: o.fua });
                // Until it resolves the write is "in flight": old or new, even with FUA.
                for (let i = 0; i < o.len; i++) note(o.at + i, data[i]!, false);
                await p;
                if (o.fua) {
                  // FUA commits everything written so far.
                  durable.set(current);
                  since.clear();
                }
              } else {
                const p = o.discard ? vol.discard(o.at, o.len) : vol.writeZeroes(o.at, o.len);
                for (let i = 0; i < o.len; i++) note(o.at + i, 0, false);
                await p;
              }
            }
          } catch (err) {
            expect((err as Error).message).toMatch(/lost power/);
          }
          const report = await sim.crash(seed);
          const reopened = await Pool.open(report.device, opts);
          const check = await reopened.check();
          expect(check.problems, 'check after crash').toEqual([]);
          const v2 = await reopened.openVolume('v');
          const after = Buffer.alloc(VOL);
          await v2.read(after, 0);
          for (let i = 0; i < VOL; i++) {
            const allowed = since.get(i) ?? new Set([durable[i]!]);
            if (!allowed.has(after[i]!)) {
              throw new Error(`byte ${i} reads ${after[i]} after the crash; allowed ${[...allowed].join(',')} (durable ${durable[i]})`);
            }
          }
          await v2.close();
          await reopened.close();
        },
      ),
      { numRuns: propertyRuns(800, 60) },
    );
  }, 900_000);
});
