import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BlockDeviceError, FileDevice, Rng, sharedAlignedBuffers } from '../../src/blockdev/index.js';
import { blockDeviceContract, pattern } from '../support/blockdev-contract.js';
import { scratchDir } from '../support/scratch.js';

const SIZE = 200 * 1024 + 512;
const MiB = 1024 * 1024;
const O_DIRECT = 0o40000;
const scratch = scratchDir('file-direct');
afterAll(() => scratch.cleanup());
let seq = 0;
const p = (name: string): string => path.join(scratch.dir, name);
const fresh = (size: number): FileDevice => FileDevice.create(p(`dev-${seq++}.img`), { size, direct: true });

/** The open flags the kernel holds for the (only) descriptor this process has on `file`. */
function kernelFlags(file: string): number {
  const target = fs.realpathSync(file);
  const fds = fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === target;
    } catch {
      return false;
    }
  });
  expect(fds, `descriptors open on ${file}`).toHaveLength(1);
  const info = fs.readFileSync(`/proc/self/fdinfo/${fds[0]}`, 'utf8');
  return parseInt(/^flags:\s*([0-7]+)$/m.exec(info)![1]!, 8);
}

function expectAllSlotsBack(): void {
  const b = sharedAlignedBuffers();
  expect(b.small.available).toBe(b.small.slots);
  expect(b.large.available).toBe(b.large.slots);
}

describe('file device with direct I/O', () => {
  blockDeviceContract({
    name: 'file device (direct I/O)',
    size: SIZE,
    make: async () => {
      const dev = fresh(SIZE);
      return { dev, dispose: () => dev.close() };
    },
  });

  it('holds its file with O_DIRECT, and a buffered open does not', async () => {
    const direct = fresh(MiB);
    expect(direct.directAlignment).toBe(512);
    expect(kernelFlags(direct.name) & O_DIRECT).toBe(O_DIRECT);
    await direct.close();
    const reopened = FileDevice.open(direct.name, { direct: true, readOnly: true });
    expect(kernelFlags(direct.name) & O_DIRECT).toBe(O_DIRECT);
    await reopened.close();
    const buffered = FileDevice.open(direct.name);
    expect(buffered.directAlignment).toBeUndefined();
    expect(kernelFlags(direct.name) & O_DIRECT).toBe(0);
    await buffered.close();
  });

  it('keeps every byte of hundreds of concurrent unaligned writes that share sectors', async () => {
    const size = 8 * MiB;
    for (const seed of [1, 2, 3]) {
      const dev = fresh(size);
      const rng = new Rng(seed);
      const model = Buffer.alloc(size);
      // Disjoint byte ranges, most far shorter than a sector, a few crossing slot boundaries.
      const writes: { offset: number; data: Buffer }[] = [];
      for (let at = rng.below(700); at < size && writes.length < 400; ) {
        const length = Math.min(size - at, rng.below(80) === 0 ? 1 + rng.below(1_500_000) : 1 + rng.below(700));
        writes.push({ offset: at, data: pattern(length, seed * 100_000 + writes.length) });
        at += length + rng.below(3) * rng.below(300);
      }
      for (const w of writes) model.set(w.data, w.offset);
      await Promise.all(writes.map((w) => dev.write(w.data, w.offset)));
      const back = Buffer.alloc(size, 0xa5);
      await dev.read(back, 0);
      expect(writes.length).toBeGreaterThan(300);
      expect(Buffer.compare(back, model), `seed ${seed}: whole device matches the model`).toBe(0);
      await dev.close();
      // And the bytes are in the file, not only in what the device hands back.
      expect(Buffer.compare(fs.readFileSync(dev.name), model)).toBe(0);
    }
    expectAllSlotsBack();
  });

  it('queues requests when every bounce slot is taken, completes them all and returns every slot', async () => {
    const buffers = sharedAlignedBuffers();
    const n = buffers.large.slots * 3;
    const dev = fresh(2 * n * MiB);
    const datas = Array.from({ length: n }, (_, i) => pattern(MiB, 500 + i));
    // Unaligned by 100 bytes: each request spans a large slot and a small one. Sharing no sector, all are in flight at once.
    const writes = datas.map((d, i) => dev.write(d, 2 * i * MiB + 100));
    expect(buffers.large.available).toBe(0);
    expect(buffers.large.queued).toBeGreaterThan(0);
    await Promise.all(writes);
    expectAllSlotsBack();
    const backs = datas.map(() => Buffer.alloc(MiB));
    const reads = backs.map((b, i) => dev.read(b, 2 * i * MiB + 100));
    expect(buffers.large.queued).toBeGreaterThan(0);
    await Promise.all(reads);
    backs.forEach((b, i) => expect(Buffer.compare(b, datas[i]!), `request ${i}`).toBe(0));
    expectAllSlotsBack();
    await dev.close();
  });

  it('serves aligned requests from one slot each, behind requests already waiting for slots', async () => {
    const buffers = sharedAlignedBuffers();
    const n = buffers.large.slots + 4;
    const dev = fresh(2 * (n + 1) * MiB);
    // Unaligned, the first ones take every large slot and the rest queue for one.
    const early = Array.from({ length: n }, (_, i) => pattern(MiB - 512, 700 + i));
    const writes = early.map((d, i) => dev.write(d, 2 * i * MiB + 512));
    expect(buffers.large.queued).toBeGreaterThan(0);
    // Aligned, one slot would do: it still waits its turn, and the slot it waits for is not taken from under the queue.
    const late = pattern(MiB, 800);
    const done: string[] = [];
    writes.forEach((w, i) => void w.then(() => done.push(`early ${i}`)));
    await Promise.all([...writes, dev.write(late, 2 * n * MiB).then(() => done.push('late'))]);
    expect(done.indexOf('late')).toBeGreaterThanOrEqual(buffers.large.slots);
    expectAllSlotsBack();
    const small = pattern(8192, 801);
    await dev.write(small, 4096);
    const back = Buffer.alloc(MiB);
    await dev.read(back, 2 * n * MiB);
    expect(back.equals(late)).toBe(true);
    const sback = Buffer.alloc(8192);
    await dev.read(sback, 4096);
    expect(sback.equals(small)).toBe(true);
    expectAllSlotsBack();
    // An aligned read that fails gives its slot back.
    fs.truncateSync(dev.name, MiB);
    await expect(dev.read(Buffer.alloc(4096), 2 * MiB)).rejects.toMatchObject({ code: 'EIO', message: /unexpected end of file/ });
    expectAllSlotsBack();
    await dev.close();
  });

  it('gives the same typed errors, and returns its slots when I/O fails', async () => {
    const dev = fresh(8192);
    await expect(dev.read(Buffer.alloc(2), 8191)).rejects.toMatchObject({ code: 'ERANGE' });
    await expect(dev.write(Buffer.alloc(1), -1)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(dev.discard(0, 8193)).rejects.toMatchObject({ code: 'ERANGE' });
    // Truncated under the device: the read finds the end of the file.
    fs.truncateSync(dev.name, 4096);
    await expect(dev.read(Buffer.alloc(3000), 4000)).rejects.toMatchObject({ code: 'EIO', message: /unexpected end of file/ });
    expectAllSlotsBack();
    await dev.close();
    await expect(dev.read(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'ECLOSED' });
    await expect(dev.write(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'ECLOSED' });
    const ro = FileDevice.open(dev.name, { readOnly: true, direct: true });
    await expect(ro.write(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'EROFS' });
    await ro.close();
  });

  it('says so when the file system cannot do direct I/O, or the size is not whole sectors', () => {
    let err: unknown;
    try {
      FileDevice.open('/proc/self/status', { readOnly: true, direct: true });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BlockDeviceError);
    expect((err as BlockDeviceError).code).toBe('ENOTSUP');
    expect((err as Error).message).toMatch('direct I/O is not supported by the file system holding /proc/self/status');
    expect(() => FileDevice.create(p('odd.img'), { size: 1000, direct: true })).toThrowError(/multiple of 512 bytes \(it is 1000\)/);
    expect(fs.existsSync(p('odd.img')), 'a refused create leaves no file').toBe(false);
    fs.writeFileSync(p('odd2.img'), Buffer.alloc(1500));
    expect(() => FileDevice.open(p('odd2.img'), { direct: true })).toThrowError(/multiple of 512/);
    // The refusal released the lock: a buffered open still works.
    return FileDevice.open(p('odd2.img')).close();
  });

  it('punches holes and writes zeroes over unaligned ranges without disturbing the bytes around them', async () => {
    const dev = fresh(4 * MiB);
    const data = pattern(4 * MiB, 9);
    await dev.write(data, 0);
    const model = Buffer.from(data);
    await Promise.all([
      dev.discard(1000, 2 * MiB + 77),
      dev.writeZeroes(3 * MiB + 5, 1000),
      dev.write(Buffer.from('around'), 2 * MiB + 1077),
      dev.write(Buffer.from('beside'), 3 * MiB - 1),
    ]);
    model.fill(0, 1000, 1000 + 2 * MiB + 77);
    model.fill(0, 3 * MiB + 5, 3 * MiB + 1005);
    model.write('around', 2 * MiB + 1077);
    model.write('beside', 3 * MiB - 1);
    await dev.flush();
    const back = Buffer.alloc(4 * MiB);
    await dev.read(back, 0);
    expect(Buffer.compare(back, model)).toBe(0);
    expect(dev.allocatedBytes()).toBeLessThan(3 * MiB);
    await dev.close();
  });
});
