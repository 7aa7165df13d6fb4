import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FaultyDevice, MemoryDevice } from '../../src/blockdev/index.js';
import { MirrorDevice, type CopyRange } from '../../src/migrate/mirror-device.js';
import { MovableDevice } from '../../src/migrate/movable-device.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';

const SIZE = 8 << 20;

type GuestOp = { kind: 'write'; at: number; len: number; seed: number } | { kind: 'zero'; at: number; len: number } | { kind: 'discard'; at: number; len: number };

const sector = fc.integer({ min: 0, max: SIZE / 512 - 1 });
const guestOp: fc.Arbitrary<GuestOp> = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), at: sector, len: fc.integer({ min: 1, max: 600 }), seed: fc.integer() }),
  fc.record({ kind: fc.constant('zero' as const), at: sector, len: fc.integer({ min: 1, max: 3000 }) }),
  fc.record({ kind: fc.constant('discard' as const), at: sector, len: fc.integer({ min: 1, max: 3000 }) }),
);

async function* whole(size: number): AsyncGenerator<CopyRange> {
  yield { offset: 0, length: size, kind: 'data' };
}

/** Lets the copy and the guest take turns (memory devices answer without yielding to anything). */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

async function apply(dev: { write(b: Uint8Array, o: number): Promise<void>; writeZeroes(o: number, l: number): Promise<void>; discard(o: number, l: number): Promise<void> }, op: GuestOp): Promise<void> {
  const at = op.at * 512;
  const len = Math.min(op.len * 512, SIZE - at);
  if (op.kind === 'write') await dev.write(pattern(len, op.seed), at);
  else if (op.kind === 'zero') await dev.writeZeroes(at, len);
  else await dev.discard(at, len);
}

describe('the write-blocking mirror', () => {
  it('leaves the target equal to the source however guest writes race the background copy', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(guestOp, { minLength: 1, maxLength: 60 }), fc.integer(), fc.boolean(), async (ops, seed, zeroed) => {
        const source = new MemoryDevice({ size: SIZE });
        await source.write(pattern(SIZE, seed), 0);
        const target = new MemoryDevice({ size: SIZE });
        if (!zeroed) await target.write(pattern(SIZE, seed + 1), 0);
        const mirror = new MirrorDevice(source, target, { targetZeroed: zeroed });
        const copy = mirror.copy(whole(SIZE), SIZE);
        const guest = (async () => {
          for (const op of ops) {
            await turn();
            await apply(mirror, op);
          }
        })();
        await Promise.all([copy, guest]);
        await mirror.flush();
        expect(mirror.failed).toBeUndefined();
        const a = Buffer.alloc(SIZE);
        const b = Buffer.alloc(SIZE);
        await source.read(a, 0);
        await target.read(b, 0);
        expect(b.equals(a)).toBe(true);
      }),
      { numRuns: propertyRuns(60, 20) },
    );
  });

  it('keeps serving from the source when the target fails: the guest sees no error, the copy stops', async () => {
    const source = new MemoryDevice({ size: SIZE });
    const target = new FaultyDevice(new MemoryDevice({ size: SIZE }), { rules: [{ ops: ['write'], after: 3, error: 'ENOSPC' }] });
    let told: Error | undefined;
    const mirror = new MirrorDevice(source, target, { targetZeroed: true, onFail: (e) => (told = e) });
    for (let k = 0; k < 10; k++) await mirror.write(pattern(4096, k), k * 65536);
    expect((mirror.failed as Error & { code?: string }).code).toBe('ENOSPC');
    expect(told).toBe(mirror.failed);
    expect(mirror.active).toBe(false);
    const got = Buffer.alloc(4096);
    await mirror.read(got, 9 * 65536);
    expect(got.equals(pattern(4096, 9))).toBe(true);
    await expect(mirror.copy(whole(SIZE), SIZE)).rejects.toBe(mirror.failed);
  });

  it('stops copying when cancelled, and mirrors nothing once detached', async () => {
    const source = new MemoryDevice({ size: SIZE });
    await source.write(pattern(SIZE, 5), 0);
    const target = new MemoryDevice({ size: SIZE });
    const mirror = new MirrorDevice(source, target, { targetZeroed: true });
    const ac = new AbortController();
    ac.abort(new Error('cancelled'));
    await expect(mirror.copy(whole(SIZE), SIZE, { signal: ac.signal })).rejects.toThrow(/cancelled/);
    mirror.detach();
    await mirror.write(pattern(512, 1), 0);
    const t = Buffer.alloc(512);
    await target.read(t, 0);
    expect(t.equals(Buffer.alloc(512))).toBe(true);
  });
});

describe('the movable device under an export', () => {
  it('holds requests across a move, and runs the held ones on the new device', async () => {
    const a = new MemoryDevice({ size: 1 << 20 });
    const b = new MemoryDevice({ size: 1 << 20 });
    const m = new MovableDevice(a);
    await m.write(pattern(4096, 1), 0);
    const release = await m.hold();
    const late = m.write(pattern(4096, 2), 4096);
    await turn();
    const onA = Buffer.alloc(4096);
    await a.read(onA, 4096);
    expect(onA.equals(Buffer.alloc(4096))).toBe(true);
    expect(m.moveTo(b)).toBe(a);
    release();
    await late;
    const onB = Buffer.alloc(4096);
    await b.read(onB, 4096);
    expect(onB.equals(pattern(4096, 2))).toBe(true);
    expect(() => m.moveTo(new MemoryDevice({ size: 512 }))).toThrow(/not the size/);
  });

  it('waits for requests in flight before a hold resolves', async () => {
    const mem = new MemoryDevice({ size: 1 << 20 });
    const m = new MovableDevice(new FaultyDevice(mem, { latencyMs: 30 }));
    const w = m.write(pattern(512, 3), 0);
    const release = await m.hold();
    const got = Buffer.alloc(512);
    await mem.read(got, 0);
    expect(got.equals(pattern(512, 3))).toBe(true);
    release();
    await w;
  });
});
