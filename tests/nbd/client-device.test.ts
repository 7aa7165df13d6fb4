import net from 'node:net';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { NbdClient, NbdClientError, NbdDevice, SparseMemoryDevice } from '../../src/nbd/index.js';
import { NBD_EINVAL, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM, STATE_HOLE, STATE_ZERO } from '../../src/nbd/constants.js';
import { blockDeviceContract, pattern } from '../support/blockdev-contract.js';
import { serveDevices } from './support.js';

const SIZE = 200 * 1024 + 512;

function overNbd(name: string, backing: () => MemoryDevice | SparseMemoryDevice, structured: boolean) {
  return {
    name,
    size: SIZE,
    runs: 100,
    make: async () => {
      const backingDev = backing();
      const s = await serveDevices([{ name: 'd', device: backingDev }]);
      const dev = await NbdDevice.connect({ port: s.port, export: 'd', structured });
      return {
        dev,
        dispose: async () => {
          await dev.close();
          await s.close();
          await backingDev.close();
        },
      };
    },
  };
}

describe('NBD client and server end to end', () => {
  blockDeviceContract(overNbd('NBD export of a memory device, structured replies', () => new MemoryDevice({ size: SIZE }), true));
  blockDeviceContract(overNbd('NBD export of a memory device, simple replies', () => new MemoryDevice({ size: SIZE }), false));
  blockDeviceContract(overNbd('NBD export of a sparse device (holes sent as hole chunks)', () => new SparseMemoryDevice(SIZE), true));

  const held: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const f of held) await f();
  });

  it('reports holes and zeroes through base:allocation, and REQ_ONE answers with one extent', async () => {
    const dev = new SparseMemoryDevice(4 * 1024 * 1024);
    const s = await serveDevices([{ name: 'thin', device: dev }]);
    held.push(s.close);
    const c = await NbdClient.connect({ port: s.port, export: 'thin' });
    await c.write(pattern(65536, 1), 1024 * 1024);
    const all = await c.blockStatus(0, 4 * 1024 * 1024);
    expect(all).toEqual([
      { length: 1024 * 1024, flags: STATE_HOLE | STATE_ZERO },
      { length: 65536, flags: 0 },
      { length: 3 * 1024 * 1024 - 65536, flags: STATE_HOLE | STATE_ZERO },
    ]);
    expect(await c.blockStatus(512, 4096, { reqOne: true })).toEqual([{ length: 4096, flags: STATE_HOLE | STATE_ZERO }]);
    const back = await c.read(1024 * 1024 - 65536, 3 * 65536);
    expect(back.subarray(65536, 131072).equals(pattern(65536, 1))).toBe(true);
    expect(back.subarray(0, 65536).every((b) => b === 0)).toBe(true);
    await c.writeZeroes(1024 * 1024, 65536);
    expect(await c.blockStatus(1024 * 1024, 65536)).toEqual([{ length: 65536, flags: STATE_HOLE | STATE_ZERO }]);
    // An empty read is one empty chunk, the last bytes to arrive: the client takes nothing and goes on.
    expect((await c.read(4096, 0)).length).toBe(0);
    expect((await c.read(1024 * 1024, 512)).equals(Buffer.alloc(512))).toBe(true);
    await c.disconnect();
  });

  it('answers bad requests with the errors the protocol names', async () => {
    const rw = new MemoryDevice({ size: 1024 * 1024 });
    const ro = new MemoryDevice({ size: 1024 * 1024 });
    const s = await serveDevices([
      { name: 'rw', device: rw },
      { name: 'ro', device: ro, readOnly: true },
    ]);
    held.push(s.close);
    const c = await NbdClient.connect({ port: s.port, export: 'rw' });
    const errno = (p: Promise<unknown>) => p.then(() => 0, (e: unknown) => (e instanceof NbdClientError ? e.errno : -1));
    expect(await errno(c.read(1024 * 1024 - 512, 1024))).toBe(NBD_EINVAL);
    expect(await errno(c.write(Buffer.alloc(1024), 1024 * 1024 - 512))).toBe(NBD_ENOSPC);
    expect(await errno(c.writeZeroes(1024 * 1024, 1))).toBe(NBD_ENOSPC);
    expect(await errno(c.trim(2 ** 40, 512))).toBe(NBD_EINVAL);
    expect(await errno(c.writeZeroes(0, 4096, { noHole: true, fastZero: true }))).toBe(NBD_ENOTSUP);
    expect(await errno(c.raw(42, 0, 0, 0))).toBe(NBD_EINVAL);
    expect(await errno(c.raw(1 /* WRITE */, 1 << 3, 0, 16, Buffer.alloc(16)))).toBe(NBD_EINVAL);
    // The connection is still in step after all of that.
    await c.write(pattern(4096, 5), 8192);
    expect((await c.read(8192, 4096)).equals(pattern(4096, 5))).toBe(true);
    await c.disconnect();

    const r = await NbdClient.connect({ port: s.port, export: 'ro' });
    expect(r.details.flags & 2).toBe(2);
    expect(await errno(r.write(Buffer.alloc(512), 0))).toBe(NBD_EPERM);
    expect(await errno(r.trim(0, 512))).toBe(NBD_EPERM);
    expect(await errno(r.writeZeroes(0, 512))).toBe(NBD_EPERM);
    await r.flush();
    await r.disconnect();
  });

  it('serves several connections to one export: a flush on one covers writes completed on the other', async () => {
    const dev = new MemoryDevice({ size: 8 * 1024 * 1024 });
    const flushed: number[] = [];
    const origFlush = dev.flush.bind(dev);
    let writesDone = 0;
    const origWrite = dev.write.bind(dev);
    dev.write = async (b, o, opts) => {
      await origWrite(b, o, opts);
      writesDone++;
    };
    dev.flush = async () => {
      flushed.push(writesDone);
      return origFlush();
    };
    const s = await serveDevices([{ name: 'shared', device: dev }]);
    held.push(s.close);
    const a = await NbdClient.connect({ port: s.port, export: 'shared' });
    const b = await NbdClient.connect({ port: s.port, export: 'shared' });
    expect(a.details.flags & (1 << 8)).not.toBe(0);
    await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? a : b).write(pattern(65536, i), i * 65536)));
    await a.flush();
    expect(flushed.at(-1)).toBe(16);
    for (let i = 0; i < 16; i++) expect((await (i % 2 ? b : a).read(i * 65536, 65536)).equals(pattern(65536, i))).toBe(true);
    await a.disconnect();
    await b.disconnect();
    // The last connection gone, the export is released.
    await vi.waitFor(() => expect(s.server.openExports).toBe(0));
  });

  it('orders an overlapping read behind the write sent before it, on one connection', async () => {
    const dev = new MemoryDevice({ size: 1024 * 1024 });
    const origWrite = dev.write.bind(dev);
    // A slow device: without ordering the read would overtake the write.
    dev.write = async (b, o, opts) => {
      await new Promise((r) => setTimeout(r, 30));
      return origWrite(b, o, opts);
    };
    const s = await serveDevices([{ name: 'slow', device: dev }]);
    held.push(s.close);
    const c = await NbdClient.connect({ port: s.port, export: 'slow' });
    const w = c.write(pattern(8192, 9), 4096);
    const r = c.read(0, 16384);
    await w;
    expect((await r).subarray(4096, 12288).equals(pattern(8192, 9))).toBe(true);
    await c.disconnect();
  });

  it('closes with clients connected, mid-handshake and mid-request, and releases every export', async () => {
    const dev = new MemoryDevice({ size: 1024 * 1024 });
    const s = await serveDevices([{ name: 'd', device: dev }]);
    const a = await NbdClient.connect({ port: s.port, export: 'd' });
    const b = await NbdClient.connect({ port: s.port, export: 'd' });
    expect(s.server.openExports).toBe(1);
    const inflight = a.write(pattern(65536, 2), 0);
    const lurker = net.connect(s.port, '127.0.0.1');
    lurker.on('error', () => undefined);
    await new Promise((r) => lurker.once('data', r));
    await s.close();
    expect(s.server.openExports).toBe(0);
    await inflight;
    const back = Buffer.alloc(65536);
    await dev.read(back, 0);
    expect(back.equals(pattern(65536, 2))).toBe(true);
    await expect(b.read(0, 512)).rejects.toThrow();
    lurker.destroy();
  });

  it('lists exports with descriptions and answers INFO with name and block sizes', async () => {
    const s = await serveDevices([
      { name: 'vm1', device: new MemoryDevice({ size: 65536 }), description: 'first' },
      { name: 'vm1@snap', device: new MemoryDevice({ size: 65536 }), readOnly: true },
    ]);
    held.push(s.close);
    expect(await NbdClient.list({ port: s.port })).toEqual([{ name: 'vm1', description: 'first' }, { name: 'vm1@snap' }]);
    const info = await NbdClient.info({ port: s.port, export: '' });
    expect(info).toMatchObject({ size: 65536, name: 'vm1', description: 'first', blockSizes: { minimum: 1, maximum: 32 * 1024 * 1024 } });
    await expect(NbdClient.connect({ port: s.port, export: '../../etc/passwd' })).rejects.toThrow(/no export named/);
  });
});

describe('a device that answers block status for part of a range', () => {
  it('gets a shorter reply rather than its unanswered tail reported as data, and the client asks again', async () => {
    const dev = new SparseMemoryDevice(8 * 1024 * 1024);
    const whole = dev.blockStatus.bind(dev);
    // Like a volume that stops after so many runs: at most 1 MiB per answer.
    dev.blockStatus = (offset, length) => whole(offset, Math.min(length, 1024 * 1024));
    const s = await serveDevices([{ name: 'p', device: dev }]);
    try {
      const c = await NbdClient.connect({ port: s.port, export: 'p' });
      await c.write(pattern(4096, 3), 5 * 1024 * 1024);
      expect(await c.blockStatus(0, 8 * 1024 * 1024)).toEqual([{ length: 1024 * 1024, flags: STATE_HOLE | STATE_ZERO }]);
      await c.disconnect();
      const remote = await NbdDevice.connect({ port: s.port, export: 'p' });
      const extents = await remote.blockStatus(0, 8 * 1024 * 1024);
      expect(extents.filter((e) => !e.hole).map((e) => [e.offset, e.length])).toEqual([[5 * 1024 * 1024, 65536]]);
      await remote.close();
    } finally {
      await s.close();
    }
  });
});
