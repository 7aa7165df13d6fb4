import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockDeviceError, CrashSimulator, FaultyDevice, MemoryDevice, type BlockOp, type FaultRule } from '../../src/blockdev/index.js';
import { ChecksumError, Pool, PoolError } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';

type Op =
  | { op: 'write'; at: number; len: number; seed: number; fua: boolean }
  | { op: 'zero'; at: number; len: number; discard: boolean }
  | { op: 'read'; at: number; len: number }
  | { op: 'flush' };

function opArb(vol: number, maxLen = 48_000): fc.Arbitrary<Op> {
  const span = fc.integer({ min: 0, max: vol - 1 }).chain((at) => fc.record({ at: fc.constant(at), len: fc.integer({ min: 1, max: Math.min(maxLen, vol - at) }) }));
  return fc.oneof(
    { weight: 6, arbitrary: fc.record({ s: span, seed: fc.integer(), fua: fc.boolean() }).map(({ s, seed, fua }) => ({ op: 'write' as const, ...s, seed, fua })) },
    { weight: 2, arbitrary: fc.record({ s: span, discard: fc.boolean() }).map(({ s, discard }) => ({ op: 'zero' as const, ...s, discard })) },
    { weight: 2, arbitrary: span.map((s) => ({ op: 'read' as const, ...s })) },
    { weight: 2, arbitrary: fc.constant({ op: 'flush' as const }) },
  );
}

/** A device that goes wrong: writes and flushes fail, once, in bursts or from some point on, with ENOSPC or EIO, whole or torn. */
const ruleArb: fc.Arbitrary<FaultRule> = fc
  .record({
    ops: fc.constantFrom<BlockOp[]>(['write'], ['flush'], ['write', 'flush'], ['write', 'flush', 'discard']),
    // Flushes are few (a commit has two), writes many: count them apart.
    after: fc.integer({ min: 0, max: 25 }),
    times: fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
    probability: fc.constantFrom(1, 0.5, 0.15),
    error: fc.constantFrom('ENOSPC' as const, 'EIO' as const),
    torn: fc.boolean(),
  })
  .map((r) => (r.ops.length === 1 && r.ops[0] === 'flush' ? { ...r, after: r.after % 6 } : r));

/**
 * What every byte of the volume may hold. `cur` is what a read returns now;
 * `curAlt` the bytes a failed write left uncertain (old or new, until a read
 * tells); `durable` and `durAlt` the same as of the last successful flush;
 * `since` what writes after it may have left after a power loss.
 */
class Model {
  readonly cur: Uint8Array;
  readonly durable: Uint8Array;
  curAlt = new Map<number, Set<number>>();
  durAlt = new Map<number, Set<number>>();
  /** Writes since the last successful flush, failed or not: a power loss may keep any of their bytes. */
  since: Array<{ at: number; data: Uint8Array }> = [];

  constructor(size: number) {
    this.cur = new Uint8Array(size);
    this.durable = new Uint8Array(size);
  }

  readable(i: number): Set<number> {
    return this.curAlt.get(i) ?? new Set([this.cur[i]!]);
  }

  allowedAfterCrash(i: number, v: number): boolean {
    const alt = this.durAlt.get(i);
    if (alt ? alt.has(v) : this.durable[i] === v) return true;
    return this.since.some((w) => i >= w.at && i < w.at + w.data.length && w.data[i - w.at] === v);
  }

  wrote(at: number, data: Uint8Array, ok: boolean): void {
    this.since.push({ at, data });
    if (ok) {
      this.cur.set(data, at);
      for (const i of this.curAlt.keys()) if (i >= at && i < at + data.length) this.curAlt.delete(i);
      return;
    }
    for (let k = 0; k < data.length; k++) {
      const alt = this.readable(at + k);
      alt.add(data[k]!);
      this.curAlt.set(at + k, alt);
    }
  }

  flushed(): void {
    this.durable.set(this.cur);
    this.durAlt = new Map([...this.curAlt].map(([i, s]) => [i, new Set(s)]));
    this.since = [];
  }

  /** A read saw `got`: it must be allowed, and from now on it is what the byte holds. */
  saw(at: number, got: Uint8Array): void {
    for (let k = 0; k < got.length; k++) {
      const i = at + k;
      const alt = this.curAlt.get(i);
      if (alt ? !alt.has(got[k]!) : this.cur[i] !== got[k]) throw new Error(`byte ${i} reads ${got[k]} before the crash; allowed ${[...this.readable(i)].join(',')}`);
      if (alt) this.curAlt.delete(i);
    }
    this.cur.set(got, at);
  }
}

/** Errors a faulty device may cause: anything else (a TypeError, an internal error) fails the test. */
function expected(err: unknown): boolean {
  if (err instanceof ChecksumError) return false;
  if (err instanceof BlockDeviceError) return err.code === 'EIO' || err.code === 'ENOSPC';
  return err instanceof PoolError && err.code === 'ENOSPC';
}

const lostPower = (err: unknown): boolean => err instanceof Error && /lost power/.test(err.message);

interface FaultCase {
  clusterSize: number;
  deviceBytes: number;
  volumeBytes: number;
  doubleWriteBytes?: number;
  rules: FaultRule[];
  ops: Op[];
  cutAfter: number;
  seed: number;
}

async function faultCase(c: FaultCase): Promise<{ failures: number }> {
  const base = new MemoryDevice({ size: c.deviceBytes });
  const opts = { cacheBytes: 8 * c.clusterSize, journalBytes: 96 * 1024 };
  {
    const pool = await Pool.create(base, { clusterSize: c.clusterSize, doubleWriteBytes: c.doubleWriteBytes, ...opts });
    await pool.createVolume('v', c.volumeBytes);
    await pool.store.checkpoint();
  }
  const sim = new CrashSimulator(base);
  const faulty = new FaultyDevice(sim, { rules: c.rules, seed: c.seed });
  const pool = await Pool.open(faulty, opts);
  const vol = await pool.openVolume('v');
  sim.cutAfter(c.cutAfter);
  const m = new Model(c.volumeBytes);
  for (const o of c.ops) {
    try {
      if (o.op === 'flush') {
        await vol.flush();
        m.flushed();
      } else if (o.op === 'read') {
        const got = Buffer.alloc(o.len);
        await vol.read(got, o.at);
        m.saw(o.at, got);
      } else {
        const data = o.op === 'write' ? pattern(o.len, o.seed) : new Uint8Array(o.len);
        let ok = false;
        try {
          if (o.op === 'write') await vol.write(data, o.at, { fua: o.fua });
          else if (o.discard) await vol.discard(o.at, o.len);
          else await vol.writeZeroes(o.at, o.len);
          ok = true;
        } finally {
          m.wrote(o.at, data, ok);
        }
        // FUA commits everything written so far.
        if (o.op === 'write' && o.fua) m.flushed();
      }
    } catch (err) {
      if (lostPower(err)) break;
      if (!expected(err)) throw err;
    }
  }
  const failures = Object.values(faulty.failures).reduce((a, b) => a + b, 0);
  const report = await sim.crash(c.seed);
  const reopened = await Pool.open(report.device, opts);
  const check = await reopened.check();
  expect(check.problems, 'check after faults and a crash').toEqual([]);
  const v2 = await reopened.openVolume('v');
  const after = Buffer.alloc(c.volumeBytes);
  await v2.read(after, 0);
  for (let i = 0; i < after.length; i++) {
    if (!m.allowedAfterCrash(i, after[i]!)) throw new Error(`byte ${i} reads ${after[i]} after the crash (durable ${m.durable[i]})`);
  }
  // The pool takes writes again, and they last: even a full one, once a discard has freed space.
  await v2.discard(0, c.volumeBytes);
  await v2.flush();
  const probe = pattern(4096, c.seed);
  await v2.write(probe, 0);
  await v2.flush();
  await v2.close();
  const again = await Pool.open(report.device, opts);
  const v3 = await again.openVolume('v');
  const back = Buffer.alloc(4096);
  await v3.read(back, 0);
  expect(back.equals(probe)).toBe(true);
  await v3.close();
  return { failures };
}

/**
 * Failed writes and flushes (ENOSPC, EIO, torn or whole) at random points of
 * a random workload, the workload going on after each, then power loss: the
 * pool opens, `check` is clean, every byte acknowledged before a successful
 * flush reads back, every other byte reads a value it held or was written —
 * and before the crash, reads never see a checksum error or a value the
 * model does not allow (the map never points at data the device lacks).
 */
describe('pool under failing writes and flushes, then power loss', () => {
  it('keeps check clean and every flushed byte intact', async () => {
    let faulted = 0;
    let cases = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(4096, 16384, 65536),
        fc.boolean(),
        fc.array(ruleArb, { minLength: 1, maxLength: 2 }),
        fc.array(opArb(96 * 1024), { minLength: 1, maxLength: 30 }),
        fc.integer({ min: 20, max: 900 }),
        fc.integer(),
        async (clusterSize, smallDoubleWrite, rules, ops, cutAfter, seed) => {
          const deviceBytes = { 4096: 1536, 16384: 2048, 65536: 3072 }[clusterSize]! * 1024;
          const r = await faultCase({ clusterSize, deviceBytes, volumeBytes: 96 * 1024, doubleWriteBytes: smallDoubleWrite ? 3 * clusterSize : undefined, rules, ops, cutAfter, seed });
          cases++;
          if (r.failures > 0) faulted++;
        },
      ),
      { numRuns: propertyRuns(1500, 150), timeout: 30_000 },
    );
    // The property means something only if faults fire in a good share of the cases.
    expect(faulted).toBeGreaterThan(cases / 3);
  }, 1_200_000);

  it('also on a pool too small for its volume (the allocator runs out as well)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(ruleArb, { minLength: 0, maxLength: 2 }),
        fc.array(opArb(512 * 1024, 96 * 1024), { minLength: 1, maxLength: 30 }),
        fc.integer({ min: 0, max: 600 }),
        fc.integer(),
        async (rules, ops, cutAfter, seed) => {
          // 4 KiB clusters, a 512 KiB volume on a pool with room for about two thirds of it.
          await faultCase({ clusterSize: 4096, deviceBytes: 1536 * 1024, volumeBytes: 512 * 1024, rules, ops, cutAfter, seed });
        },
      ),
      { numRuns: propertyRuns(500, 60), timeout: 30_000 },
    );
  }, 1_200_000);
});
