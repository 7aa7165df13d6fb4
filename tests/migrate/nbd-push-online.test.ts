import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/blockdev/index.js';
import { Jobs } from '../../src/host/jobs.js';
import { SparseMemoryDevice } from '../../src/nbd/index.js';
import { MovableDevice } from '../../src/migrate/movable-device.js';
import { pushOnlineAsJob, type LiveVolumeSource } from '../../src/migrate/nbd-push-online.js';
import type { PushEvent } from '../../src/migrate/nbd-push-job.js';
import { parseNbdUri } from '../../src/migrate/nbd-push-uri.js';
import { pattern } from '../support/blockdev-contract.js';
import { memoryPool } from '../support/pool.js';
import { propertyRuns, scratchDir } from '../support/scratch.js';
import { serveDevices } from '../nbd/support.js';

const MiB = 1 << 20;
const SIZE = 8 * MiB;

const closers: (() => Promise<void>)[] = [];
const { dir, cleanup } = scratchDir('nbd-push-online');
afterAll(async () => {
  for (const c of closers.reverse()) await c();
  cleanup();
});

/** A served volume as the server's live volumes lend it: one movable device, and a client count the test sets. */
async function liveVolume(): Promise<{ pool: Awaited<ReturnType<typeof memoryPool>>['pool']; movable: MovableDevice; live: LiveVolumeSource; setClients: (n: number) => void; model: Buffer }> {
  const { pool } = await memoryPool({ deviceSize: 64 * MiB });
  await pool.createVolume('v', SIZE);
  const vol = await pool.openVolume('v');
  const model = Buffer.alloc(SIZE);
  const first = pattern(3 * MiB, 5);
  await vol.write(first, MiB);
  first.copy(model, MiB);
  const movable = new MovableDevice(vol);
  let clients = 1;
  const live: LiveVolumeSource = {
    acquire: async () => ({ device: movable, exportName: 'v', release: async () => undefined }),
    // As the server's: polls, and rejects once the signal fired.
    untilNoClients: async (_name, signal) => {
      while (clients > 0) await sleep(5, undefined, signal ? { signal } : undefined);
    },
  };
  return { pool, movable, live, setClients: (n) => (clients = n), model };
}

async function served(device: BlockDevice): Promise<{ address: ReturnType<typeof parseNbdUri>; close: () => Promise<void> }> {
  const s = await serveDevices([{ name: 't', device }]);
  closers.push(s.close);
  return { address: parseNbdUri(s.uri('t')), close: s.close };
}

async function contents(dev: BlockDevice): Promise<Buffer> {
  const b = Buffer.alloc(SIZE);
  await dev.read(b, 0);
  return b;
}

type GuestOp = { kind: 'write'; at: number; len: number; seed: number } | { kind: 'zero'; at: number; len: number } | { kind: 'discard'; at: number; len: number };
const sector = fc.integer({ min: 0, max: SIZE / 4096 - 1 }).map((n) => n * 4096);
const len = fc.integer({ min: 1, max: 300 }).map((n) => n * 4096);
const guestOp: fc.Arbitrary<GuestOp> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('write' as const), at: sector, len, seed: fc.integer() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('zero' as const), at: sector, len }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('discard' as const), at: sector, len }) },
);

async function apply(dev: MovableDevice, model: Buffer, op: GuestOp): Promise<void> {
  const n = Math.min(op.len, SIZE - op.at);
  if (op.kind === 'write') {
    const data = pattern(n, op.seed);
    await dev.write(data, op.at);
    data.copy(model, op.at);
  } else {
    await (op.kind === 'zero' ? dev.writeZeroes(op.at, n) : dev.discard(op.at, n));
    model.fill(0, op.at, op.at + n);
  }
}

describe('online push into an NBD export', () => {
  it('property: with guest writes racing the copy and after ready, the target reads what the volume reads once the last client left', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(guestOp, { minLength: 1, maxLength: 30 }), fc.array(guestOp, { maxLength: 10 }), fc.boolean(), async (during, after, oldData) => {
        const { pool, movable, live, setClients, model } = await liveVolume();
        const dev = new SparseMemoryDevice(SIZE);
        // A target that held something else: its zero runs must be zeroed.
        if (oldData) await dev.write(pattern(SIZE, 77), 0);
        const { address } = await served(dev);
        let ready!: () => void;
        const isReady = new Promise<void>((r) => (ready = r));
        const events: PushEvent[] = [];
        const jobs = new Jobs(dir, `p${run++}`);
        const push = pushOnlineAsJob(pool, 'v', address, { poolName: 'p', jobs, live, onEvent: (e) => void (events.push(e), e.phase === 'ready' && ready()) }, undefined);
        // The guest writes while the copy runs (the copy takes a turn between chunks).
        for (const op of during) {
          await apply(movable, model, op);
          await new Promise((r) => setImmediate(r));
        }
        await isReady;
        for (const op of after) await apply(movable, model, op);
        setClients(0);
        const out = await push;
        expect(out).toMatchObject({ online: true, sourceKept: true, size: SIZE });
        expect((await contents(dev)).equals(model)).toBe(true);
        expect((await contents(movable)).equals(model)).toBe(true);
        expect(events.filter((e) => e.phase === 'ready')).toHaveLength(1);
        expect(jobs.list()[0]).toMatchObject({ kind: 'migrate', state: 'done' });
        // The mirror is gone: writes now reach the volume alone.
        await movable.write(Buffer.alloc(4096, 1), 0);
        expect((await contents(dev)).subarray(0, 4096).equals(model.subarray(0, 4096))).toBe(true);
      }),
      { numRuns: propertyRuns(30, 8) },
    );
  });

  it('a cancel while in step ends the job cancelled, the target flushed and the volume served alone', async () => {
    const { pool, movable, live, model } = await liveVolume();
    const dev = new SparseMemoryDevice(SIZE);
    const { address } = await served(dev);
    const stop = new AbortController();
    const jobs = new Jobs(dir, 'cancel');
    const push = pushOnlineAsJob(pool, 'v', address, { poolName: 'p', jobs, live, signal: stop.signal, onEvent: (e) => void (e.phase === 'ready' && stop.abort()) }, undefined);
    await expect(push).rejects.toThrow();
    expect(jobs.list()[0]).toMatchObject({ kind: 'migrate', state: 'cancelled' });
    expect((await contents(dev)).equals(model)).toBe(true);
    await movable.write(Buffer.alloc(4096, 1), 0);
    expect((await contents(dev)).subarray(0, 4096).equals(Buffer.alloc(4096))).toBe(true);
  });

  it('a target that goes away fails the job; the guest never sees an error', async () => {
    const { pool, movable, live, model } = await liveVolume();
    const dev = new SparseMemoryDevice(SIZE);
    const { address, close } = await served(dev);
    const jobs = new Jobs(dir, 'gone');
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    const push = pushOnlineAsJob(pool, 'v', address, { poolName: 'p', jobs, live, onEvent: (e) => void (e.phase === 'ready' && ready()) }, undefined);
    const failed = expect(push).rejects.toThrow(/the online push of p\/v to nbd:\/\/.* failed \(the volume is untouched and its clients saw nothing\)/);
    await isReady;
    await close();
    for (let i = 0; i < 20; i++) await apply(movable, model, { kind: 'write', at: i * 65536, len: 65536, seed: i });
    await failed;
    expect(jobs.list()[0]).toMatchObject({ kind: 'migrate', state: 'failed' });
    expect((await contents(movable)).equals(model)).toBe(true);
  });
});
