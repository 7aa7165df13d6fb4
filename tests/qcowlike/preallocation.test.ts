import { describe, expect, it } from 'vitest';
import { memoryPool } from '../support/pool.js';

describe('volume creation', () => {
  it('preallocation=metadata creates every L2 table and no data; full writes zeroes everywhere', async () => {
    const { pool } = await memoryPool({ deviceSize: 64 << 20 });
    const base = pool.stats().usedClusters;
    await pool.createVolume('meta', 100 << 20, { preallocation: 'metadata' });
    // 1600 clusters of 64K need two L2 tables of 819 entries and one L1 block (the catalog is replaced, not added).
    expect(pool.stats().usedClusters - base).toBe(3);
    expect((await pool.volumeInfo('meta')).allocatedBytes).toBe(0);
    await pool.createVolume('full', 8 << 20, { preallocation: 'full' });
    expect((await pool.volumeInfo('full')).allocatedBytes).toBe(8 << 20);
    const vol = await pool.openVolume('full');
    const back = Buffer.alloc(8 << 20, 1);
    await vol.read(back, 0);
    expect(back.every((b) => b === 0)).toBe(true);
    await vol.close();
    expect((await pool.check()).problems).toEqual([]);
  });

  it('creates a 16 TiB volume thin, reads and writes at its far end', async () => {
    const { pool } = await memoryPool({ deviceSize: 64 << 20 });
    const size = 16 * 2 ** 40;
    const info = await pool.createVolume('huge', size);
    expect(info.size).toBe(size);
    const vol = await pool.openVolume('huge');
    const data = Buffer.alloc(8192, 0xee);
    await vol.write(data, size - 8192);
    const back = Buffer.alloc(8192);
    await vol.read(back, size - 8192);
    expect(back.equals(data)).toBe(true);
    expect((await pool.volumeInfo('huge')).allocatedBytes).toBe(8192);
    await expect(vol.write(Buffer.alloc(1), size)).rejects.toMatchObject({ code: 'ERANGE' });
    await vol.close();
  });

  it('refuses bad names, duplicates, sizes, and deleting a volume in use', async () => {
    const { pool } = await memoryPool();
    await expect(pool.createVolume('a/b', 1 << 20)).rejects.toThrow(/invalid volume name 'a\/b'/);
    await expect(pool.createVolume('v@s', 1 << 20)).rejects.toThrow(/invalid volume name/);
    await expect(pool.createVolume('v', 0)).rejects.toThrow(/invalid volume size/);
    await expect(pool.createVolume('v', 65 * 2 ** 40)).rejects.toThrow(/over the maximum of 64T/);
    await pool.createVolume('v', 1 << 20);
    await expect(pool.createVolume('v', 1 << 20)).rejects.toThrow(/already exists/);
    const vol = await pool.openVolume('v');
    await expect(pool.deleteVolume('v')).rejects.toThrow(/in use/);
    await vol.close();
    await pool.deleteVolume('v');
    await expect(pool.openVolume('v')).rejects.toThrow(/volume 'v' not found/);
    expect((await pool.check()).problems).toEqual([]);
  });
});
