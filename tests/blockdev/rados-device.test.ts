import { describe, expect, it } from 'vitest';
import { BlockDeviceError } from '../../src/blockdev/index.js';
import { RADOS_ERR, RadosDevice } from '../../src/blockdev/rados/index.js';
import { blockDeviceContract } from '../support/blockdev-contract.js';
import { MemoryObjects } from '../support/memory-objects.js';

const OBJECT = 16 * 1024;

async function device(objects = new MemoryObjects(), onFenced?: () => void): Promise<{ dev: RadosDevice; objects: MemoryObjects }> {
  await RadosDevice.create(objects, 'd', 1 << 20, OBJECT);
  return { dev: await RadosDevice.open(objects, 'd', onFenced ? { onFenced } : {}), objects };
}

describe('RADOS device over an in-memory object store', () => {
  blockDeviceContract({
    name: 'RADOS device (memory objects)',
    size: 200 * 1024 + 512,
    make: async () => {
      const objects = new MemoryObjects();
      const dev = await RadosDevice.create(objects, 'c', 200 * 1024 + 512, OBJECT);
      return { dev, dispose: () => dev.close() };
    },
  });

  it('resolves a write before RADOS answers, and the flush waits for the answer', async () => {
    const { dev, objects } = await device();
    objects.hold();
    await dev.write(Buffer.alloc(4096, 7), 0);
    let flushed = false;
    const flush = dev.flush().then(() => (flushed = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(flushed).toBe(false);
    objects.release();
    await flush;
    expect(flushed).toBe(true);
  });

  it('waits for a FUA write’s own answer', async () => {
    const { dev, objects } = await device();
    objects.hold();
    let done = false;
    const w = dev.write(Buffer.alloc(4096, 1), 0, { fua: true }).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toBe(false);
    objects.release();
    await w;
  });

  it('reports a write that failed after it resolved at every later flush', async () => {
    const { dev, objects } = await device();
    objects.failNext('write', -5);
    await dev.write(Buffer.alloc(4096, 2), 8192);
    await expect(dev.flush()).rejects.toThrow(/an earlier write failed: .*write at offset 8192 length 4096: RADOS: EIO/);
    await expect(dev.flush()).rejects.toThrow(/an earlier write failed/);
  });

  it('names ENOSPC and EDQUOT as ENOSPC', async () => {
    const { dev, objects } = await device();
    objects.failNext('write', RADOS_ERR.EDQUOT);
    await expect(dev.write(Buffer.alloc(512), 0, { fua: true })).rejects.toSatisfy((e: unknown) => e instanceof BlockDeviceError && e.code === 'ENOSPC');
    objects.failNext('zero', RADOS_ERR.ENOSPC);
    await expect(dev.writeZeroes(100, 100)).rejects.toSatisfy((e: unknown) => e instanceof BlockDeviceError && e.code === 'ENOSPC');
    // Failures the caller saw are not reported again.
    await dev.flush();
  });

  it('once fenced (ESHUTDOWN), says so once and refuses everything after', async () => {
    let fenced = 0;
    const { dev, objects } = await device(undefined, () => fenced++);
    objects.failNext('write', RADOS_ERR.ESHUTDOWN);
    await dev.write(Buffer.alloc(4096), 0);
    await expect(dev.flush()).rejects.toThrow(/fenced: another host took the pool over/);
    expect(fenced).toBe(1);
    await expect(dev.read(Buffer.alloc(512), 0)).rejects.toThrow(/fenced/);
    await expect(dev.write(Buffer.alloc(512), 0)).rejects.toThrow(/fenced/);
    expect(objects.sent.read).toBe(0);
  });

  it('bounds what is in flight: past 256 unanswered operations a write waits for room', async () => {
    const { dev, objects } = await device();
    objects.hold();
    for (let i = 0; i < 256; i++) await dev.write(Buffer.alloc(512, i), (i * 512) % (1 << 20));
    let resolved = false;
    const next = dev.write(Buffer.alloc(512), 0).then(() => (resolved = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(resolved).toBe(false);
    expect(objects.heldCount).toBe(256);
    objects.release();
    await next;
    await dev.flush();
  });

  it('admits writes waiting for room in arrival order: a later write to the same place never passes an earlier one', async () => {
    const MiB = 1024 * 1024;
    const objects = new MemoryObjects();
    const dev = await RadosDevice.create(objects, 'order', 64 * MiB, 4 * MiB);
    objects.hold();
    // 31.5 MiB in flight: a 1 MiB write waits for room (the bound is 32 MiB), a 512-byte one alone would fit.
    for (let i = 0; i < 63; i++) await dev.write(Buffer.alloc(MiB / 2, 1), 8 * MiB + i * (MiB / 2));
    const earlier = dev.write(Buffer.alloc(MiB, 0xee), 0);
    const later = dev.write(Buffer.alloc(512, 0x11), 0);
    await new Promise((r) => setTimeout(r, 20));
    objects.release();
    await Promise.all([earlier, later]);
    await dev.flush();
    const back = Buffer.alloc(1024);
    await dev.read(back, 0);
    expect(back.subarray(0, 512).every((b) => b === 0x11)).toBe(true);
    expect(back.subarray(512).every((b) => b === 0xee)).toBe(true);
  });

  it('removes whole objects, truncates tails and zeroes the middle, making no object to hold zeroes', async () => {
    const { dev, objects } = await device();
    await dev.write(Buffer.alloc(3 * OBJECT, 9), 0);
    await dev.discard(0, OBJECT + 100);
    await dev.writeZeroes(2 * OBJECT + 10, 20);
    await dev.writeZeroes(5 * OBJECT, 100);
    expect(objects.sent.remove).toBe(1);
    expect(objects.sent.zero).toBe(3);
    expect([...objects.objects.keys()].filter((k) => k.startsWith('strata_data.')).length).toBe(2);
    const back = Buffer.alloc(3 * OBJECT);
    await dev.read(back, 0);
    expect(back.subarray(0, OBJECT + 100).every((b) => b === 0)).toBe(true);
    expect(back.subarray(OBJECT + 100, 2 * OBJECT + 10).every((b) => b === 9)).toBe(true);
    expect(back.subarray(2 * OBJECT + 10, 2 * OBJECT + 30).every((b) => b === 0)).toBe(true);
  });

  it('refuses a second device under one name, and a damaged header by name', async () => {
    const objects = new MemoryObjects();
    await RadosDevice.create(objects, 'x', 1 << 20);
    await expect(RadosDevice.create(objects, 'x', 1 << 20)).rejects.toThrow(/already exists/);
    objects.objects.set('strata_header.x', Buffer.from('{"magic":"strata-rados-device","version":1,"size":-1}'));
    await expect(RadosDevice.open(objects, 'x')).rejects.toThrow(/header object strata_header.x is damaged/);
    objects.objects.set('strata_header.x', Buffer.from('not json'));
    await expect(RadosDevice.open(objects, 'x')).rejects.toThrow(/not JSON/);
    await expect(RadosDevice.open(objects, 'y')).rejects.toThrow(/no device named 'y'/);
  });
});
