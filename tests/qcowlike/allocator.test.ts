import { describe, expect, it } from 'vitest';
import { memoryPool } from '../support/pool.js';

describe('allocator', () => {
  it('hands out contiguous clusters and never one whose freeing is not yet durable', async () => {
    const { pool } = await memoryPool({ deviceSize: 4 << 20, clusterSize: 65536 });
    const a = pool.alloc.allocate();
    const b = pool.alloc.allocate();
    expect(b).toBe(a + 1);
    pool.alloc.free(a);
    pool.alloc.free(b, { metadata: true });
    const seen = new Set<number>();
    const reserve = pool.alloc.catalogReserve;
    expect(reserve).toBeGreaterThan(0);
    while (pool.alloc.freeClusters > 2 + reserve) seen.add(pool.alloc.allocate());
    expect(seen.has(a) || seen.has(b)).toBe(false);
    // Only the two freed clusters and the catalog's reserve are free: neither freed one can be had
    // before the commit that freed them, and the reserve is the catalog's alone.
    expect(() => pool.alloc.allocate()).toThrow(/pool is full.*kept so that the catalog can always be rewritten/);
    const forCatalog = pool.alloc.allocateRun(reserve, { catalog: true });
    expect(seen.has(forCatalog) || forCatalog === a || forCatalog === b).toBe(false);
  });

  it('releases freed data at the commit, freed metadata only at the checkpoint', async () => {
    const { pool } = await memoryPool({ deviceSize: 64 << 20, clusterSize: 65536 });
    const a = pool.alloc.allocate();
    const b = pool.alloc.allocate();
    await pool.store.commit();
    pool.alloc.free(a);
    pool.alloc.free(b, { metadata: true });
    expect(pool.alloc.waiting).toBe(2);
    await pool.store.commit();
    // The journal may still replay deltas onto a metadata cluster until the next checkpoint.
    expect(pool.alloc.waiting).toBe(1);
    await pool.store.checkpoint();
    expect(pool.alloc.waiting).toBe(0);
  });

  it('a write that finds the pool full only because of quarantine succeeds after releasing it', async () => {
    const { pool } = await memoryPool({ deviceSize: 4 << 20, clusterSize: 65536 });
    await pool.createVolume('v', 8 << 20);
    const vol = await pool.openVolume('v');
    const free = pool.alloc.freeClusters - pool.alloc.catalogReserve;
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
    const empty = pool.alloc.usedClusters;
    await pool.createVolume('v', 64 << 20);
    const vol = await pool.openVolume('v');
    const data = Buffer.alloc(1 << 20, 1);
    let error: unknown;
    for (let i = 0; i < 64 && !error; i++) await vol.write(data, i << 20).catch((e: unknown) => (error = e));
    expect(error).toMatchObject({ code: 'ENOSPC' });
    expect(String(error)).toMatch(/pool is full/);
    // A full pool can still delete: the catalog that drops the volume has its clusters kept aside.
    await vol.close();
    await pool.deleteVolume('v');
    await pool.store.checkpoint();
    expect(pool.alloc.usedClusters).toBe(empty);
    expect((await pool.check()).problems).toEqual([]);
    expect(await pool.listVolumes()).toEqual([]);
  });
});
