import { describe, expect, it } from 'vitest';
import { memoryPool } from '../support/pool.js';

describe('allocator', () => {
  it('hands out contiguous clusters, never one freed since the last checkpoint, and reuses it after', async () => {
    const { pool } = await memoryPool({ deviceSize: 4 << 20, clusterSize: 65536 });
    const a = pool.alloc.allocate();
    const b = pool.alloc.allocate();
    expect(b).toBe(a + 1);
    pool.alloc.free(a);
    const seen = new Set<number>();
    while (pool.alloc.freeClusters > 1) seen.add(pool.alloc.allocate());
    expect(seen.has(a)).toBe(false);
    // Only the quarantined cluster is free: it cannot be had until a checkpoint releases it.
    expect(pool.alloc.freeClusters).toBe(1);
    expect(() => pool.alloc.allocate()).toThrow(/pool is full/);
    await pool.store.checkpoint();
    expect(pool.alloc.allocate()).toBe(a);
  });

  it('a write that finds the pool full only because of quarantine succeeds after releasing it', async () => {
    const { pool } = await memoryPool({ deviceSize: 4 << 20, clusterSize: 65536 });
    await pool.createVolume('v', 8 << 20);
    const vol = await pool.openVolume('v');
    const free = pool.alloc.freeClusters;
    // Fill all but two clusters (one more L2 table may be needed), then free half of them without a checkpoint.
    const data = Buffer.alloc(65536, 7);
    for (let i = 0; i < free - 1; i++) await vol.write(data, i * 65536);
    await vol.flush();
    await vol.discard(0, 8 * 65536);
    await vol.write(data, (free - 1) * 65536);
    await vol.write(data, free * 65536);
    const back = Buffer.alloc(65536);
    await vol.read(back, free * 65536);
    expect(back.equals(data)).toBe(true);
    await vol.close();
    expect((await pool.check()).problems).toEqual([]);
  });

  it('reports a full pool as ENOSPC naming the pool state', async () => {
    const { pool } = await memoryPool({ deviceSize: 4 << 20, clusterSize: 65536 });
    await pool.createVolume('v', 64 << 20);
    const vol = await pool.openVolume('v');
    const data = Buffer.alloc(1 << 20, 1);
    let error: unknown;
    for (let i = 0; i < 64 && !error; i++) await vol.write(data, i << 20).catch((e: unknown) => (error = e));
    expect(error).toMatchObject({ code: 'ENOSPC' });
    expect(String(error)).toMatch(/pool is full/);
  });
});
