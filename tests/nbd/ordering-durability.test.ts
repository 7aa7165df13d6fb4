import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CrashSimulator, FaultyDevice, MemoryDevice } from '../../src/blockdev/index.js';
import { NBD_EIO, NBD_ENOSPC } from '../../src/nbd/constants.js';
import { NbdClient, NbdClientError } from '../../src/nbd/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';
import { serveDevices } from './support.js';

const SIZE = 256 * 1024;

type Op = { kind: 'write'; offset: number; length: number; seed: number } | { kind: 'read'; offset: number; length: number } | { kind: 'zero'; offset: number; length: number };

const span = fc.integer({ min: 0, max: SIZE - 1 }).chain((offset) => fc.record({ offset: fc.constant(offset), length: fc.integer({ min: 1, max: Math.min(40_000, SIZE - offset) }) }));
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ s: span, seed: fc.integer() }).map(({ s, seed }) => ({ kind: 'write' as const, ...s, seed })) },
  { weight: 3, arbitrary: span.map((s) => ({ kind: 'read' as const, ...s })) },
  { weight: 1, arbitrary: span.map((s) => ({ kind: 'zero' as const, ...s })) },
);

describe('ordering and durability through the server', () => {
  it('pipelined overlapping requests on a device with random latency give exactly the sequential result', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), fc.integer(), async (ops, seed) => {
        const dev = new FaultyDevice(new MemoryDevice({ size: SIZE }), { latencyMs: 3, jitter: true, seed });
        const s = await serveDevices([{ name: 'd', device: dev }]);
        const c = await NbdClient.connect({ port: s.port, export: 'd' });
        try {
          const model = new Uint8Array(SIZE);
          const checks: Promise<void>[] = [];
          // Everything is sent at once; the model is what each request must see in sending order.
          for (const o of ops) {
            if (o.kind === 'write') {
              const data = pattern(o.length, o.seed);
              checks.push(c.write(data, o.offset));
              model.set(data, o.offset);
            } else if (o.kind === 'zero') {
              checks.push(c.writeZeroes(o.offset, o.length));
              model.fill(0, o.offset, o.offset + o.length);
            } else {
              const expected = Buffer.from(model.subarray(o.offset, o.offset + o.length));
              checks.push(c.read(o.offset, o.length).then((got) => expect(got.equals(expected), `read ${o.offset}+${o.length}`).toBe(true)));
            }
          }
          await Promise.all(checks);
        } finally {
          await c.disconnect();
          await s.close();
        }
      }),
      { numRuns: propertyRuns(60, 15) },
    );
  });

  it('keeps every write acknowledged before a completed flush, or with FUA, across a power loss', async () => {
    const BLOCK = 4096;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.constant('flush' as const), fc.record({ fua: fc.boolean(), conn: fc.integer({ min: 0, max: 1 }) })), { minLength: 1, maxLength: 40 }),
        fc.integer(),
        async (steps, seed) => {
          const sim = new CrashSimulator(new MemoryDevice({ size: SIZE }));
          const s = await serveDevices([{ name: 'd', device: sim }]);
          const conns = [await NbdClient.connect({ port: s.port, export: 'd' }), await NbdClient.connect({ port: s.port, export: 'd' })];
          const durable = new Set<number>();
          const volatile = new Set<number>();
          let block = 0;
          for (const step of steps) {
            if (block >= SIZE / BLOCK) break;
            if (step === 'flush') {
              // A flush on one connection covers writes completed on both.
              await conns[block % 2]!.flush();
              for (const b of volatile) durable.add(b);
              volatile.clear();
            } else {
              const b = block++;
              await conns[step.conn]!.write(pattern(BLOCK, b + seed), b * BLOCK, { fua: step.fua });
              (step.fua ? durable : volatile).add(b);
            }
          }
          // Power fails with the clients still attached: no orderly close gets to flush.
          const { device } = await sim.crash(seed);
          for (const c of conns) c.destroy();
          await s.close();
          const got = Buffer.alloc(BLOCK);
          for (let b = 0; b < block; b++) {
            await device.read(got, b * BLOCK);
            const want = pattern(BLOCK, b + seed);
            if (durable.has(b)) expect(got.equals(want), `block ${b} was durable`).toBe(true);
            // Not flushed: each sector is old (zero) or new, never anything else.
            else for (let i = 0; i < BLOCK; i += 512) expect(got.subarray(i, i + 512).equals(want.subarray(i, i + 512)) || got.subarray(i, i + 512).every((x) => x === 0)).toBe(true);
          }
        },
      ),
      { numRuns: propertyRuns(80, 20) },
    );
  });

  it('turns device errors into NBD errors and goes on serving', async () => {
    const dev = new FaultyDevice(new MemoryDevice({ size: SIZE }), {
      rules: [
        { ops: ['read'], range: { start: 65536, end: 65536 + 4096 }, error: 'EIO' },
        { ops: ['write'], range: { start: 131072, end: 131072 + 4096 }, error: 'ENOSPC' },
      ],
    });
    const s = await serveDevices([{ name: 'd', device: dev }]);
    try {
      for (const structured of [true, false]) {
        const c = await NbdClient.connect({ port: s.port, export: 'd', structured });
        const errno = (p: Promise<unknown>) => p.then(() => 0, (e: unknown) => (e instanceof NbdClientError ? e.errno : -1));
        expect(await errno(c.read(65536, 8192))).toBe(NBD_EIO);
        expect(await errno(c.write(Buffer.alloc(512), 131072 + 512))).toBe(NBD_ENOSPC);
        await c.write(pattern(4096, 1), 0);
        expect((await c.read(0, 4096)).equals(pattern(4096, 1))).toBe(true);
        await c.disconnect();
      }
    } finally {
      await s.close();
    }
  });
});

describe('block status from a device that answers badly', () => {
  it('always sends nonzero descriptors within the range, whatever extents the device returns', async () => {
    const extent = fc.record({
      offset: fc.oneof(fc.integer({ min: -10, max: SIZE + 10 }), fc.constant(Number.NaN)),
      length: fc.oneof(fc.integer({ min: -10, max: SIZE }), fc.constant(Number.POSITIVE_INFINITY)),
      hole: fc.boolean(),
      zero: fc.boolean(),
    });
    const mem = new MemoryDevice({ size: SIZE });
    let answer: { offset: number; length: number; hole: boolean; zero: boolean }[] = [];
    const odd = Object.assign(Object.create(mem) as MemoryDevice, { blockStatus: async () => answer });
    const s = await serveDevices([{ name: 'odd', device: odd }]);
    const c = await NbdClient.connect({ port: s.port, export: 'odd' });
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(extent, { maxLength: 8 }), span, async (extents, range) => {
          answer = extents;
          const got = await c.blockStatus(range.offset, range.length);
          expect(got.length).toBeGreaterThan(0);
          expect(got.every((d) => d.length > 0)).toBe(true);
          // Less than asked is allowed (the client asks again from there); more is not.
          expect(got.reduce((n, d) => n + d.length, 0)).toBeLessThanOrEqual(range.length);
        }),
        { numRuns: propertyRuns(300, 60) },
      );
      // A device that throws gets an error reply, and the connection goes on.
      odd.blockStatus = async () => {
        throw new Error('map unreadable');
      };
      await expect(c.blockStatus(0, 4096)).rejects.toThrow("export 'odd': block status at offset 0 length 4096 failed (EIO)");
      expect((await c.read(0, 512)).length).toBe(512);
    } finally {
      await c.disconnect();
      await s.close();
    }
  });
});
