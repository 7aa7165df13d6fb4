import { describe, expect, it } from 'vitest';
import { BlockDeviceError, FaultyDevice, MemoryDevice } from '../../src/blockdev/index.js';

describe('faulty device', () => {
  it('fails only the chosen operation in the chosen range, with the chosen code', async () => {
    const dev = new FaultyDevice(new MemoryDevice({ size: 1 << 20 }), { rules: [{ ops: ['read'], range: { start: 4096, end: 8192 }, error: 'EIO' }] });
    await dev.write(Buffer.alloc(8192, 3), 0);
    await dev.read(Buffer.alloc(4096), 0);
    const err = await dev.read(Buffer.alloc(100), 5000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlockDeviceError);
    expect(err).toMatchObject({ code: 'EIO', op: 'read', offset: 5000, length: 100 });
    expect(String((err as Error).message)).toContain('offset 5000');
    expect(dev.failures.read).toBe(1);
  });

  it('fires after N matching requests and at most `times` times', async () => {
    const dev = new FaultyDevice(new MemoryDevice({ size: 65536 }), { rules: [{ ops: ['write'], after: 2, times: 1, error: 'ENOSPC' }] });
    await dev.write(Buffer.alloc(10), 0);
    await dev.write(Buffer.alloc(10), 0);
    await expect(dev.write(Buffer.alloc(10), 0)).rejects.toMatchObject({ code: 'ENOSPC' });
    await dev.write(Buffer.alloc(10), 0);
  });

  it('a failed write leaves the inner device untouched', async () => {
    const inner = new MemoryDevice({ size: 65536 });
    const dev = new FaultyDevice(inner, { rules: [{ ops: ['write'] }] });
    await expect(dev.write(Buffer.alloc(512, 9), 0)).rejects.toMatchObject({ code: 'EIO' });
    const back = Buffer.alloc(512, 1);
    await inner.read(back, 0);
    expect(back.every((b) => b === 0)).toBe(true);
  });

  it('fails by seeded probability, reproducibly', async () => {
    const run = async (): Promise<boolean[]> => {
      const dev = new FaultyDevice(new MemoryDevice({ size: 4096 }), { seed: 42, rules: [{ probability: 0.3 }] });
      const out: boolean[] = [];
      for (let i = 0; i < 50; i++) out.push(await dev.read(Buffer.alloc(1), 0).then(() => true, () => false));
      return out;
    };
    const a = await run();
    expect(a).toEqual(await run());
    const failed = a.filter((ok) => !ok).length;
    expect(failed).toBeGreaterThan(5);
    expect(failed).toBeLessThan(30);
  });

  it('adds latency', async () => {
    const dev = new FaultyDevice(new MemoryDevice({ size: 4096 }), { latencyMs: 30 });
    const t0 = Date.now();
    await dev.read(Buffer.alloc(1), 0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
  });
});
