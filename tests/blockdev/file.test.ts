import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BlockDeviceError, FileDevice } from '../../src/blockdev/index.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('file');
afterAll(() => scratch.cleanup());
const p = (name: string): string => path.join(scratch.dir, name);

describe('file device', () => {
  it('is created sparse', async () => {
    const dev = FileDevice.create(p('sparse.img'), { size: 1 << 30 });
    expect(dev.size).toBe(1 << 30);
    expect(dev.allocatedBytes()).toBeLessThan(1 << 20);
    await dev.close();
  });

  it('gives space back on discard: 64 MiB written, discarded, allocated blocks fall', async () => {
    const dev = FileDevice.create(p('discard.img'), { size: 128 << 20 });
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    for (let i = 0; i < 64; i++) await dev.write(chunk, i << 20);
    await dev.flush();
    const before = fs.statSync(p('discard.img')).blocks;
    expect(before * 512).toBeGreaterThanOrEqual(64 << 20);
    await dev.discard(0, 64 << 20);
    await dev.flush();
    const after = fs.statSync(p('discard.img')).blocks;
    expect(after * 512).toBeLessThan(1 << 20);
    const back = Buffer.alloc(4096, 1);
    await dev.read(back, 5 << 20);
    expect(back.every((b) => b === 0)).toBe(true);
    await dev.close();
  });

  it('write-zeroes with unmap allowed punches; without, it allocates zeroes', async () => {
    const dev = FileDevice.create(p('zero.img'), { size: 16 << 20 });
    await dev.write(Buffer.alloc(8 << 20, 1), 0);
    await dev.writeZeroes(0, 4 << 20, { mayUnmap: true });
    await dev.writeZeroes(4 << 20, 4 << 20);
    const blocks = fs.statSync(p('zero.img')).blocks * 512;
    expect(blocks).toBeGreaterThanOrEqual(4 << 20);
    expect(blocks).toBeLessThan(6 << 20);
    const back = Buffer.alloc(8 << 20, 1);
    await dev.read(back, 0);
    expect(back.every((b) => b === 0)).toBe(true);
    await dev.close();
  });

  it('refuses a second writer, in this process or another, while the first holds the file', async () => {
    const dev = FileDevice.create(p('locked.img'), { size: 1 << 20 });
    expect(() => FileDevice.open(p('locked.img'))).toThrowError(/locked/);
    try {
      FileDevice.open(p('locked.img'));
    } catch (e) {
      expect(e).toBeInstanceOf(BlockDeviceError);
      expect((e as BlockDeviceError).code).toBe('EBUSY');
    }
    await dev.close();
    const again = FileDevice.open(p('locked.img'));
    expect(again.size).toBe(1 << 20);
    await again.close();
  });

  it('opens read-only and refuses writes with EROFS', async () => {
    const dev = FileDevice.create(p('ro.img'), { size: 1 << 20 });
    await dev.write(Buffer.from('strata'), 100);
    await dev.close();
    const ro = FileDevice.open(p('ro.img'), { readOnly: true });
    const back = Buffer.alloc(6);
    await ro.read(back, 100);
    expect(back.toString()).toBe('strata');
    await expect(ro.write(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'EROFS' });
    await ro.close();
  });

  it('names the file and the problem when it cannot open', () => {
    expect(() => FileDevice.open(p('missing.img'))).toThrowError(/missing\.img.*ENOENT|ENOENT.*missing\.img/);
    fs.writeFileSync(p('exists.img'), 'x');
    expect(() => FileDevice.create(p('exists.img'), { size: 4096 })).toThrowError(/exists\.img/);
  });

  it('rejects out-of-range and malformed requests with typed errors', async () => {
    const dev = FileDevice.create(p('range.img'), { size: 8192 });
    await expect(dev.read(Buffer.alloc(2), 8191)).rejects.toMatchObject({ code: 'ERANGE' });
    await expect(dev.write(Buffer.alloc(1), -1)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(dev.discard(0, 8193)).rejects.toMatchObject({ code: 'ERANGE' });
    await dev.close();
    await expect(dev.read(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: 'ECLOSED' });
  });
});
