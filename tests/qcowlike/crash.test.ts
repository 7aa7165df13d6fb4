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
 * Where the model's bytes live in the volume: `windows` runs of `win` bytes,
 * `stride` apart (one window per L2 table when the stride is a table's span).
 */
interface Layout {
  windows: number;
  win: number;
  stride: number;
}

/** The volume extents behind model bytes [at, at + len). */
function extents(l: Layout, at: number, len: number): Array<{ model: number; vol: number; n: number }> {
  const out: Array<{ model: number; vol: number; n: number }> = [];
  for (let m = at; m < at + len; ) {
    const w = Math.floor(m / l.win);
    const n = Math.min(at + len, (w + 1) * l.win) - m;
    out.push({ model: m, vol: w * l.stride + (m - w * l.win), n });
    m += n;
  }
  return out;
}

interface CrashCase {
  clusterSize: number;
  deviceBytes: number;
  layout: Layout;
  maxIntents?: number;
  /** A double-write area smaller than a checkpoint, so that checkpoints write home in several passes. */
  doubleWriteBytes?: number;
  ops: Op[];
  cutAfter: number;
  seed: number;
}

async function crashCase(c: CrashCase): Promise<void> {
  const { layout } = c;
  const size = layout.windows * layout.win;
  const base = new MemoryDevice({ size: c.deviceBytes });
  const opts = { cacheBytes: 8 * c.clusterSize, journalBytes: 96 * 1024, maxIntents: c.maxIntents };
  {
    const pool = await Pool.create(base, { clusterSize: c.clusterSize, doubleWriteBytes: c.doubleWriteBytes, ...opts });
    await pool.createVolume('v', (layout.windows - 1) * layout.stride + layout.win);
    await pool.store.checkpoint();
  }
  const sim = new CrashSimulator(base);
  const pool = await Pool.open(sim, opts);
  const vol = await pool.openVolume('v');
  sim.cutAfter(c.cutAfter);
  const durable = new Uint8Array(size);
  const current = new Uint8Array(size);
  const since = new Map<number, Set<number>>();
  const note = (at: number, value: number): void => {
    current[at] = value;
    let s = since.get(at);
    if (!s) since.set(at, (s = new Set([durable[at]!])));
    s.add(value);
  };
  try {
    for (const o of c.ops) {
      if (o.op === 'flush') {
        await vol.flush();
        durable.set(current);
        since.clear();
      } else if (o.op === 'write') {
        const data = pattern(o.len, o.seed);
        const p = Promise.all(extents(layout, o.at, o.len).map((e) => vol.write(data.subarray(e.model - o.at, e.model - o.at + e.n), e.vol, { fua: o.fua })));
        // Until it resolves the write is "in flight": old or new, even with FUA.
        for (let i = 0; i < o.len; i++) note(o.at + i, data[i]!);
        await p;
        if (o.fua) {
          // FUA commits everything written so far.
          durable.set(current);
          since.clear();
        }
      } else {
        const p = Promise.all(extents(layout, o.at, o.len).map((e) => (o.discard ? vol.discard(e.vol, e.n) : vol.writeZeroes(e.vol, e.n))));
        for (let i = 0; i < o.len; i++) note(o.at + i, 0);
        await p;
      }
    }
  } catch (err) {
    expect((err as Error).message).toMatch(/lost power/);
  }
  const report = await sim.crash(c.seed);
  const reopened = await Pool.open(report.device, opts);
  const check = await reopened.check();
  expect(check.problems, 'check after crash').toEqual([]);
  const v2 = await reopened.openVolume('v');
  const after = Buffer.alloc(size);
  for (const e of extents(layout, 0, size)) await v2.read(after.subarray(e.model, e.model + e.n), e.vol);
  for (let i = 0; i < size; i++) {
    const allowed = since.get(i) ?? new Set([durable[i]!]);
    if (!allowed.has(after[i]!)) {
      throw new Error(`byte ${i} reads ${after[i]} after the crash; allowed ${[...allowed].join(',')} (durable ${durable[i]})`);
    }
  }
  await v2.close();
  await reopened.close();
}

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
        fc.boolean(),
        fc.array(opArb, { minLength: 1, maxLength: 25 }),
        fc.integer({ min: 0, max: 400 }),
        fc.integer(),
        async (clusterSize, smallDoubleWrite, ops, cutAfter, seed) => {
          // Small devices, so that freed clusters come round again for reuse within one workload.
          const deviceBytes = { 4096: 1536, 16384: 2048, 65536: 3072 }[clusterSize]! * 1024;
          const doubleWriteBytes = smallDoubleWrite ? 3 * clusterSize : undefined;
          await crashCase({ clusterSize, deviceBytes, layout: { windows: 1, win: VOL, stride: VOL }, doubleWriteBytes, ops, cutAfter, seed });
        },
      ),
      { numRuns: propertyRuns(800, 60) },
    );
  }, 900_000);

  it('also when writes spread over more L2 tables than may be open for overwrite at once (intents ended and granted mid-workload)', async () => {
    // With 4 KiB clusters an L2 table maps 204 clusters: four windows, four tables, at most two open.
    const stride = 204 * 4096;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 30 }), fc.integer({ min: 0, max: 500 }), fc.integer(), async (ops, cutAfter, seed) => {
        await crashCase({ clusterSize: 4096, deviceBytes: 2048 * 1024, layout: { windows: 4, win: VOL / 4, stride }, maxIntents: 2, ops, cutAfter, seed });
      }),
      { numRuns: propertyRuns(300, 40) },
    );
  }, 900_000);
});
