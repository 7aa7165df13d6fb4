import net from 'node:net';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { PassThroughDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { Jobs } from '../../src/host/jobs.js';
import { SparseMemoryDevice } from '../../src/nbd/index.js';
import { pushVolume } from '../../src/migrate/nbd-push-copy.js';
import { pushAsJob } from '../../src/migrate/nbd-push-job.js';
import { PushTarget } from '../../src/migrate/nbd-push-target.js';
import { parseNbdUri, type PushTargetAddress } from '../../src/migrate/nbd-push-uri.js';
import type { Pool } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { memoryPool } from '../support/pool.js';
import { propertyRuns, scratchDir } from '../support/scratch.js';
import { serveDevices } from '../nbd/support.js';

const MiB = 1 << 20;

type Layout = { kind: 'data'; at: number; len: number; seed: number; zeroAt?: number } | { kind: 'zero'; at: number; len: number } | { kind: 'discard'; at: number; len: number };

/** Writes a layout into a fresh volume: data, allocated zero runs (write-zeroes that may not unmap) and holes. */
async function volumeWith(size: number, layout: Layout[]): Promise<{ pool: Pool; read: () => Promise<Buffer> }> {
  const { pool } = await memoryPool({ deviceSize: 4 * size + 16 * MiB });
  await pool.createVolume('v', size);
  const v = await pool.openVolume('v');
  for (const op of layout) {
    const len = Math.min(op.len, size - op.at);
    if (len <= 0) continue;
    if (op.kind === 'data') {
      const data = pattern(len, op.seed);
      // Zero bytes written as data: what the push must find by looking at them.
      if (op.zeroAt !== undefined) data.fill(0, op.zeroAt, op.zeroAt + 64 * 1024);
      await v.write(data, op.at);
    }
    else if (op.kind === 'zero') await v.writeZeroes(op.at, len);
    else await v.discard(op.at, len);
  }
  await v.flush();
  await v.close();
  const read = async (): Promise<Buffer> => {
    const r = await pool.openVolume('v', { readOnly: true });
    const b = Buffer.alloc(size);
    await r.read(b, 0);
    await r.close();
    return b;
  };
  return { pool, read };
}

async function contents(dev: BlockDevice, size: number): Promise<Buffer> {
  const b = Buffer.alloc(size);
  await dev.read(b, 0);
  return b;
}

const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c();
});

async function served(device: BlockDevice, readOnly = false): Promise<PushTargetAddress> {
  const s = await serveDevices([{ name: 't', device, readOnly }]);
  closers.push(s.close);
  return parseNbdUri(s.uri('t'));
}

/** A TCP proxy to `port` that cuts both connections once `limit` bytes went from the client to the server. */
async function cuttingProxy(port: number, limit: number): Promise<number> {
  const proxy = net.createServer((client) => {
    const server = net.connect({ port, host: '127.0.0.1' });
    let sent = 0;
    client.on('error', () => undefined);
    server.on('error', () => undefined);
    client.on('data', (d: Buffer) => {
      sent += d.length;
      if (sent > limit) {
        client.destroy();
        server.destroy();
      } else server.write(d);
    });
    server.on('data', (d: Buffer) => client.write(d));
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  closers.push(() => new Promise((r) => proxy.close(() => r())));
  return (proxy.address() as net.AddressInfo).port;
}

describe('push of a volume into an NBD export', () => {
  const SIZE = 24 * MiB;
  const layout: Layout[] = [
    { kind: 'data', at: 0, len: 3 * MiB, seed: 1 },
    { kind: 'zero', at: 5 * MiB, len: 2 * MiB },
    { kind: 'data', at: 9 * MiB, len: 5 * MiB + 4096, seed: 2, zeroAt: MiB + 4096 },
  ];

  it('sends data as writes, and into a target that reads zeroes sends nothing for zero runs and holes', async () => {
    const { pool, read } = await volumeWith(SIZE, layout);
    const want = await read();
    const dev = new SparseMemoryDevice(SIZE);
    const target = await PushTarget.open(await served(dev), SIZE, 'p/v');
    const source = await pool.openVolume('v', { readOnly: true });
    const phases: string[] = [];
    const r = await pushVolume(source, target, { onProgress: (phase, done, total) => void (done === total && phases.push(phase)) });
    await target.close();
    expect((await contents(dev, SIZE)).equals(want)).toBe(true);
    expect(r.bytesZeroed).toBe(0);
    // Exactly the granules that hold a byte other than zero are sent.
    let nonZero = 0;
    for (let at = 0; at < SIZE; at += 4096) if (!want.subarray(at, at + 4096).equals(Buffer.alloc(4096))) nonZero += 4096;
    expect(r.bytesWritten).toBe(nonZero);
    expect(r.bytesAlreadyZero).toBe(SIZE - r.bytesWritten);
    expect(r.bytesVerified).toBeGreaterThanOrEqual(r.bytesWritten);
    expect(r.bytesVerified).toBeLessThan(SIZE / 2);
    expect(phases).toEqual(['copy', 'verify']);
    await source.close();
  });

  it('zeroes what the target held where the volume reads zeroes, without sending zero bytes', async () => {
    const { pool, read } = await volumeWith(SIZE, layout);
    const dev = new SparseMemoryDevice(SIZE);
    await dev.write(pattern(SIZE, 9), 0);
    const target = await PushTarget.open(await served(dev), SIZE, 'p/v');
    const source = await pool.openVolume('v', { readOnly: true });
    const r = await pushVolume(source, target);
    await target.close();
    await source.close();
    expect((await contents(dev, SIZE)).equals(await read())).toBe(true);
    expect(r.bytesAlreadyZero).toBe(0);
    expect(r.bytesZeroed).toBe(SIZE - r.bytesWritten);
  });

  it('property: whatever the volume and the target held before, the target reads what the volume reads', async () => {
    const size = 6 * MiB;
    const sector = fc.integer({ min: 0, max: size / 4096 - 1 }).map((n) => n * 4096);
    const op: fc.Arbitrary<Layout> = fc.oneof(
      fc.record({ kind: fc.constant('data' as const), at: sector, len: fc.integer({ min: 1, max: 400 }).map((n) => n * 4096), seed: fc.integer({ min: 0, max: 3 }) }),
      fc.record({ kind: fc.constant('zero' as const), at: sector, len: fc.integer({ min: 1, max: 400 }).map((n) => n * 4096) }),
      fc.record({ kind: fc.constant('discard' as const), at: sector, len: fc.integer({ min: 1, max: 400 }).map((n) => n * 4096) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 12 }), fc.array(fc.record({ at: sector, len: fc.integer({ min: 1, max: 300 }).map((n) => n * 4096) }), { maxLength: 4 }), async (ops, old) => {
        const { pool, read } = await volumeWith(size, ops);
        const dev = new SparseMemoryDevice(size + MiB);
        for (const o of old) await dev.write(pattern(Math.min(o.len, size - o.at), 7), o.at);
        const target = await PushTarget.open(await served(dev), size, 'p/v');
        const source = await pool.openVolume('v', { readOnly: true });
        await pushVolume(source, target);
        await target.close();
        await source.close();
        expect((await contents(dev, size)).equals(await read())).toBe(true);
      }),
      { numRuns: propertyRuns(40, 10) },
    );
  });

  it('refuses a target smaller than the volume, naming both sizes, and a read-only one', async () => {
    await expect(PushTarget.open(await served(new SparseMemoryDevice(SIZE - MiB)), SIZE, 'p/v')).rejects.toThrow(/is smaller than p\/v \(24M, 25165824 bytes\)/);
    await expect(PushTarget.open(await served(new SparseMemoryDevice(SIZE), true), SIZE, 'p/v')).rejects.toThrow(/is read-only/);
  });

  it('fails when the target does not read back what was written, naming the first bad byte', async () => {
    const { pool } = await volumeWith(SIZE, layout);
    // A target that loses one byte of what it is sent at 9M + 12345.
    const bad = 9 * MiB + 12345;
    class Lossy extends PassThroughDevice {
      override async write(buf: Uint8Array, offset: number): Promise<void> {
        const copy = Buffer.from(buf);
        if (bad >= offset && bad < offset + copy.length) copy[bad - offset] ^= 0xff;
        await this.inner.write(copy, offset);
      }
    }
    const target = await PushTarget.open(await served(new Lossy(new SparseMemoryDevice(SIZE))), SIZE, 'p/v');
    const source = await pool.openVolume('v', { readOnly: true });
    await expect(pushVolume(source, target)).rejects.toThrow(`the first bad byte is at offset ${bad}`);
    target.destroy();
    await source.close();
  });

  describe('as a job', () => {
    const { dir, cleanup } = scratchDir('nbd-push-job');
    afterAll(cleanup);

    it('a target that drops the connection midway fails the job, naming the target, and the volume is untouched', async () => {
      const { pool, read } = await volumeWith(SIZE, layout);
      const before = await read();
      const s = await serveDevices([{ name: 't', device: new SparseMemoryDevice(SIZE) }]);
      closers.push(s.close);
      const port = await cuttingProxy(s.port, 2 * MiB);
      const jobs = new Jobs(dir, 'p1');
      await expect(pushAsJob(pool, 'v', parseNbdUri(`nbd://127.0.0.1:${port}/t`), { poolName: 'p1', jobs }, undefined)).rejects.toThrow(/the push of p1\/v to nbd:\/\/127\.0\.0\.1:\d+\/t failed \(the source is untouched\)/);
      const [job] = jobs.list();
      expect(job).toMatchObject({ kind: 'migrate', state: 'failed', target: `p1/v to nbd://127.0.0.1:${port}/t` });
      expect((await read()).equals(before)).toBe(true);
      expect(pool.catalogNow.volumes.map((v) => v.name)).toEqual(['v']);
    });

    it('refuses a volume with connected clients, and stops when one connects midway', async () => {
      const { pool } = await volumeWith(SIZE, layout);
      const address = await served(new SparseMemoryDevice(SIZE));
      const jobs = new Jobs(dir, 'p2');
      await expect(pushAsJob(pool, 'v', address, { poolName: 'p2', jobs, clientsOf: () => 2 }, undefined)).rejects.toThrow("volume 'p2/v' has 2 connected clients: a push of a volume in use needs --online");
      let calls = 0;
      await expect(pushAsJob(pool, 'v', address, { poolName: 'p2', jobs, clientsOf: () => (calls++ > 1 ? 1 : 0) }, undefined)).rejects.toThrow(/a client connected to 'p2\/v' during the push/);
    });

    it('keeps to --rate, records it, and a cancel ends the job cancelled', async () => {
      const { pool } = await volumeWith(SIZE, layout);
      const dev = new SparseMemoryDevice(SIZE);
      const jobs = new Jobs(dir, 'p3');
      const stop = new AbortController();
      // 1 MiB/s: the first 4 MiB chunk is due after four seconds; the cancel comes at the first progress report.
      let seen = 0;
      const push = pushAsJob(pool, 'v', await served(dev), { poolName: 'p3', jobs, signal: stop.signal, onEvent: () => void (seen++ === 1 && stop.abort()) }, MiB);
      await expect(push).rejects.toThrow();
      const [job] = jobs.list();
      expect(job).toMatchObject({ kind: 'migrate', state: 'cancelled', rate: MiB });
      expect(job!.bytesDone).toBeLessThan(SIZE);
    });

    it('ends done with the whole volume counted', async () => {
      const { pool, read } = await volumeWith(SIZE, layout);
      const dev = new SparseMemoryDevice(SIZE);
      const jobs = new Jobs(dir, 'p4');
      const out = await pushAsJob(pool, 'v', await served(dev), { poolName: 'p4', jobs }, undefined);
      expect(out).toMatchObject({ pool: 'p4', volume: 'v', sourceKept: true, size: SIZE });
      expect(jobs.list()[0]).toMatchObject({ kind: 'migrate', state: 'done', bytesDone: SIZE, bytesTotal: SIZE });
      expect((await contents(dev, SIZE)).equals(await read())).toBe(true);
    });
  });
});

describe('NBD URIs of push targets', () => {
  it('reads TCP and Unix forms, and refuses TLS and nonsense', () => {
    expect(parseNbdUri('nbd://example.org/disk%201').connect).toEqual({ host: 'example.org', port: 10809, export: 'disk 1' });
    expect(parseNbdUri('nbd://[::1]:10810/vm').connect).toEqual({ host: '::1', port: 10810, export: 'vm' });
    expect(parseNbdUri('nbd+unix:///vm?socket=/run/x.sock').connect).toEqual({ socket: '/run/x.sock', export: 'vm' });
    expect(() => parseNbdUri('nbds://h/vm')).toThrow(/TLS targets/);
    expect(() => parseNbdUri('nbd+unix:///vm')).toThrow(/needs \?socket=PATH/);
    expect(() => parseNbdUri('nbd://')).toThrow(/not an NBD URI/);
  });
});
