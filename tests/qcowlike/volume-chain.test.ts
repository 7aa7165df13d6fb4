import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { Pool, PoolError } from '../../src/qcowlike/index.js';
import { cloneVolume, createSnapshots, deleteSnapshot, openFrozen, revertSnapshot, templateFrom } from '../../src/snapshot/index.js';
import { pattern } from '../support/blockdev-contract.js';

const SIZE = 4 << 20;

async function fill(pool: Pool, name: string, seed: number): Promise<void> {
  const v = await pool.openVolume(name);
  for (let k = 0; k < 16; k++) await v.write(pattern(65536, seed + k), ((seed * 7 + k * 13) % 60) * 65536);
  await v.close();
}

describe('deleting a volume with its whole chain', () => {
  it('frees every layer of the volume, its snapshots and their nameless bases, and nothing its origin or neighbours read', async () => {
    const pool = await Pool.create(new MemoryDevice({ size: 64 << 20 }), { clusterSize: 65536 });
    await pool.createVolume('keep', SIZE);
    await fill(pool, 'keep', 1);
    await templateFrom(pool, { volume: 'keep' }, 'base');
    await pool.flush();
    const before = pool.stats().usedClusters;
    await cloneVolume(pool, { template: 'base' }, 'v');
    await fill(pool, 'v', 2);
    await createSnapshots(pool, [{ volume: 'v', snapshot: 'a' }]);
    await fill(pool, 'v', 3);
    await createSnapshots(pool, [{ volume: 'v', snapshot: 'b' }]);
    await fill(pool, 'v', 4);
    // A revert keeps b: v's history is a branch, with a nameless base once a goes.
    await revertSnapshot(pool, { volume: 'v', snapshot: 'a' });
    await fill(pool, 'v', 5);
    await deleteSnapshot(pool, { volume: 'v', snapshot: 'a' });
    const keepBytes = Buffer.alloc(SIZE);
    await (await pool.openVolume('keep')).read(keepBytes, 0);

    await pool.deleteVolumeChain('v');

    const c = pool.catalogNow;
    expect(c.volumes.map((x) => x.name)).toEqual(['keep']);
    expect(c.snapshots).toEqual([]);
    expect(c.layers.every((l) => !l.reclaiming)).toBe(true);
    expect(pool.stats().usedClusters).toBe(before);
    expect((await pool.check()).problems).toEqual([]);
    const t = await openFrozen(pool, { template: 'base' });
    const tb = Buffer.alloc(SIZE);
    await t.read(tb, 0);
    await t.close();
    const kb = Buffer.alloc(SIZE);
    await (await pool.openVolume('keep')).read(kb, 0);
    expect(kb.equals(keepBytes)).toBe(true);
    await pool.close();
  });

  it('is refused, naming them, while a clone of one of its snapshots exists or the volume is open', async () => {
    const pool = await Pool.create(new MemoryDevice({ size: 32 << 20 }), { clusterSize: 65536 });
    await pool.createVolume('v', SIZE);
    await fill(pool, 'v', 1);
    await createSnapshots(pool, [{ volume: 'v', snapshot: 's' }]);
    await cloneVolume(pool, { volume: 'v', snapshot: 's' }, 'c');
    await expect(pool.deleteVolumeChain('v')).rejects.toThrow(/snapshots that c depends on/);
    const h = await pool.openVolume('v');
    await expect(pool.deleteVolumeChain('v')).rejects.toThrow(PoolError);
    await h.close();
    expect(pool.catalogNow.snapshots.map((s) => s.name)).toEqual(['s']);
    await expect(pool.deleteVolumeChain('nope')).rejects.toThrow(/not found|no volume/);
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
  });
});
