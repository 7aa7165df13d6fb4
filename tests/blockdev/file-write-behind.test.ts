import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BlockDeviceError, FileDevice } from '../../src/blockdev/index.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('write-behind');
afterAll(() => scratch.cleanup());

type Sync = typeof fs.fdatasync;

/** Replaces fs.fdatasync for the test's length: the device calls it through the module object. */
function withSync(fake: (real: Sync) => Sync): () => void {
  const real = fs.fdatasync;
  (fs as { fdatasync: Sync }).fdatasync = fake(real);
  return () => void ((fs as { fdatasync: Sync }).fdatasync = real);
}

describe('write-behind syncs of a page-cache file', () => {
  it('start in the background as writes pile up, and a failure among them fails the next flush, once', async () => {
    const dev = FileDevice.create(path.join(scratch.dir, 'a.img'), { size: 80 << 20 });
    let calls = 0;
    const restore = withSync((real) => ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      calls++;
      if (calls === 1) return setImmediate(() => cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5, syscall: 'fdatasync' })));
      return real(fd, cb);
    }) as unknown as Sync);
    try {
      // Small writes count towards the background sync; large ones, written back in long runs, do not.
      const large = Buffer.alloc(1 << 20, 7);
      for (let i = 0; i < 64; i++) await dev.write(large, i << 20);
      expect(calls).toBe(0);
      const chunk = Buffer.alloc(128 << 10, 7);
      for (let i = 0; i < 520; i++) await dev.write(chunk, (i % 512) * chunk.length);
      expect(calls).toBe(1);
      await new Promise((r) => setImmediate(r));
      const err = await dev.flush().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(BlockDeviceError);
      expect((err as BlockDeviceError).code).toBe('EIO');
      await dev.flush();
    } finally {
      restore();
      await dev.close();
    }
  });

  it('is waited for by close', async () => {
    const dev = FileDevice.create(path.join(scratch.dir, 'b.img'), { size: 80 << 20 });
    let finished = false;
    const restore = withSync((real) => ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void => {
      setTimeout(() => real(fd, (e) => ((finished = true), cb(e))), 50);
    }) as unknown as Sync);
    try {
      const chunk = Buffer.alloc(128 << 10, 7);
      for (let i = 0; i < 513; i++) await dev.write(chunk, (i % 512) * chunk.length);
      await dev.close();
      expect(finished).toBe(true);
    } finally {
      restore();
    }
  });
});
