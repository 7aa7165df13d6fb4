import { describe, expect, it } from 'vitest';
import { MemoryDevice, Rng } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';

/** With 4 KiB clusters an L2 table maps 204 clusters. */
const TABLE = 204 * 4096;

describe('in-place overwrite intents', () => {
  it('overwrites over more L2 tables than may be open complete, however many are in flight, within the bound and without checkpoints', async () => {
    const tables = 24;
    const maxIntents = 3;
    const size = tables * TABLE;
    const dev = new MemoryDevice({ size: size + (16 << 20) });
    const pool = await Pool.create(dev, { clusterSize: 4096, maxIntents });
    await pool.createVolume('v', size);
    const vol = await pool.openVolume('v');
    const model = pattern(size, 5);
    await vol.write(model, 0);
    await vol.flush();
    // Every overwrite below lands on durably referenced data: each needs its table open.
    let checkpoints = 0;
    let commits = 0;
    pool.store.addHooks({
      onCapture: () => void commits++,
      onCheckpoint: async () => void checkpoints++,
    });
    const rng = new Rng(11);
    let most = 0;
    for (let round = 0; round < 4; round++) {
      const blocks = new Set<number>();
      while (blocks.size < 128) blocks.add(rng.below(size / 4096));
      const writes = [...blocks].map((b, k) => ({ at: b * 4096, data: pattern(4096, round * 1000 + k) }));
      await Promise.all(
        writes.map(async ({ at, data }) => {
          await vol.write(data, at);
          most = Math.max(most, pool.store.openIntents);
        }),
      );
      for (const { at, data } of writes) data.copy(model, at);
    }
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(maxIntents);
    // Tables past the bound are closed by the commits that open others, not by a checkpoint each.
    expect(commits).toBeGreaterThan(3);
    expect(checkpoints).toBeLessThanOrEqual(1);
    await vol.flush();
    const back = Buffer.alloc(size);
    await vol.read(back, 0);
    expect(back.equals(model)).toBe(true);
    await vol.close();
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
  }, 60_000);

  it('refuses a bound below one table', async () => {
    await expect(Pool.create(new MemoryDevice({ size: 16 << 20 }), { maxIntents: 0 })).rejects.toThrow(/maxIntents must be a whole number of tables, at least 1/);
  });
});
