import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';

describe('shrink refusal on a fragmented volume', () => {
  it('counts every allocated byte past the new end, beyond one block-status answer (65,536 extents)', async () => {
    const C = 4096;
    // Data and holes alternate cluster by cluster: 32,769 data runs past the first cluster are 65,537 extents.
    const runs = 32769;
    const pool = await Pool.create(new MemoryDevice({ size: 200 << 20 }), { clusterSize: C });
    await pool.createVolume('v', C * (1 + 2 * runs));
    const vol = await pool.openVolume('v');
    const data = Buffer.alloc(C, 7);
    for (let k = 0; k < runs; k += 512) {
      const batch: Promise<void>[] = [];
      for (let j = k; j < Math.min(runs, k + 512); j++) batch.push(vol.write(data, C * (1 + 2 * j)));
      await Promise.all(batch);
    }
    await vol.close();
    await expect(pool.resizeVolume('v', C)).rejects.toThrow(`would discard ${runs * C} allocated bytes`);
    await pool.close();
  }, 60_000);
});
