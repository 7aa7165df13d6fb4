import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockDeviceError, CrashSimulator, MemoryDevice } from '../../src/blockdev/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';

const SIZE = 16 * 1024;

type CrashOp =
  | { op: 'write'; offset: number; length: number; seed: number; fua: boolean }
  | { op: 'zero'; offset: number; length: number; discard: boolean }
  | { op: 'flush' };

const span = fc.integer({ min: 0, max: SIZE - 1 }).chain((offset) =>
  fc.record({ offset: fc.constant(offset), length: fc.integer({ min: 1, max: Math.min(3000, SIZE - offset) }) }),
);
const crashOps = fc.array(
  fc.oneof(
    { weight: 6, arbitrary: fc.record({ s: span, seed: fc.integer(), fua: fc.boolean() }).map(({ s, seed, fua }): CrashOp => ({ op: 'write', ...s, seed, fua })) },
    { weight: 2, arbitrary: fc.record({ s: span, discard: fc.boolean() }).map(({ s, discard }): CrashOp => ({ op: 'zero', ...s, discard })) },
    { weight: 1, arbitrary: fc.constant<CrashOp>({ op: 'flush' }) },
  ),
  { minLength: 1, maxLength: 30 },
);

describe('crash simulator', () => {
  it('keeps every write acknowledged before a completed flush or with FUA; every other byte is old or new', async () => {
    await fc.assert(
      fc.asyncProperty(crashOps, fc.integer(), async (ops, crashSeed) => {
        const sim = new CrashSimulator(new MemoryDevice({ size: SIZE }));
        // Per byte: the values a crash may leave. A completed flush or a FUA write narrows it to one.
        const allowed: Array<Set<number>> = Array.from({ length: SIZE }, () => new Set([0]));
        const pendingSinceFlush: Array<[number, number, Uint8Array | null]> = [];
        for (const o of ops) {
          if (o.op === 'flush') {
            await sim.flush();
            // What is current now is the only durable value.
            const now = Buffer.alloc(SIZE);
            await sim.read(now, 0);
            for (let i = 0; i < SIZE; i++) allowed[i] = new Set([now[i]!]);
            pendingSinceFlush.length = 0;
            continue;
          }
          const data = o.op === 'write' ? pattern(o.length, o.seed) : null;
          if (o.op === 'write') await sim.write(data!, o.offset, { fua: o.fua });
          else if (o.discard) await sim.discard(o.offset, o.length);
          else await sim.writeZeroes(o.offset, o.length);
          for (let i = 0; i < o.length; i++) {
            const v = data ? data[i]! : 0;
            if (o.op === 'write' && o.fua) allowed[o.offset + i] = new Set([v]);
            else allowed[o.offset + i]!.add(v);
          }
          pendingSinceFlush.push([o.offset, o.length, data]);
        }
        const report = await sim.crash(crashSeed);
        const after = Buffer.alloc(SIZE);
        await report.device.read(after, 0);
        for (let i = 0; i < SIZE; i++) {
          if (!allowed[i]!.has(after[i]!)) {
            throw new Error(`byte ${i} reads ${after[i]} after the crash; allowed: ${[...allowed[i]!].join(',')}`);
          }
        }
      }),
      { numRuns: propertyRuns(500) },
    );
  });

  it('tears writes at sector granularity, never inside a sector', async () => {
    const inner = new MemoryDevice({ size: 64 * 1024 });
    const sim = new CrashSimulator(inner);
    await sim.write(Buffer.alloc(64 * 1024, 0xff), 0);
    const report = await sim.crash(7);
    const after = Buffer.alloc(64 * 1024);
    await report.device.read(after, 0);
    for (let s = 0; s < 128; s++) {
      const sector = after.subarray(s * 512, (s + 1) * 512);
      const first = sector[0];
      expect(sector.every((b) => b === first), `sector ${s} is whole`).toBe(true);
    }
  });

  it('produces every outcome (dropped, kept, torn) over many seeds', async () => {
    const seen = { dropped: 0, kept: 0, torn: 0 };
    for (let seed = 0; seed < 30; seed++) {
      const sim = new CrashSimulator(new MemoryDevice({ size: 8192 }));
      await sim.write(Buffer.alloc(4096, 1), 0);
      const r = await sim.crash(seed);
      seen.dropped += r.dropped;
      seen.kept += r.kept;
      seen.torn += r.torn;
    }
    expect(seen.dropped).toBeGreaterThan(0);
    expect(seen.kept).toBeGreaterThan(0);
    expect(seen.torn).toBeGreaterThan(0);
  });

  it('is dead after a crash: later requests fail with EIO', async () => {
    const sim = new CrashSimulator(new MemoryDevice({ size: 4096 }));
    await sim.crash(1);
    await expect(sim.read(Buffer.alloc(512), 0)).rejects.toBeInstanceOf(BlockDeviceError);
    await expect(sim.write(Buffer.alloc(512), 0)).rejects.toMatchObject({ code: 'EIO' });
  });
});
