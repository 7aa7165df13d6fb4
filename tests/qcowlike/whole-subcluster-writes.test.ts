import { describe, expect, it } from 'vitest';
import { CrashSimulator, FaultyDevice, MemoryDevice, Rng } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { volumeAfterCrash } from '../support/pool.js';

/**
 * Writes of whole sub-clusters within one cluster take a path of their own
 * (decided without yielding, one device write): the same rules as any write.
 */
const C = 65536;
const S = 4096;
const opts = { cacheBytes: 64 * C };

async function setup(): Promise<{ sim: CrashSimulator; faulty: FaultyDevice; pool: Pool }> {
  const base = new MemoryDevice({ size: 64 << 20 });
  const created = await Pool.create(base, { clusterSize: C, ...opts });
  await created.createVolume('v', 8 << 20);
  await created.store.checkpoint();
  const sim = new CrashSimulator(base);
  const faulty = new FaultyDevice(sim, { seed: 3 });
  return { sim, faulty, pool: await Pool.open(faulty, opts) };
}

describe('writes of whole sub-clusters of one cluster', () => {
  it('a refused write into a cluster it allocated gives the cluster back and leaves the map as the device backs it', async () => {
    const { sim, faulty, pool } = await setup();
    const v = await pool.openVolume('v');
    const a = pattern(S, 1);
    await v.write(a, 0);
    await v.flush();
    const used = pool.alloc.usedClusters;
    faulty.addRule({ ops: ['write'], error: 'EIO', range: { start: pool.header.dataStart * C, end: pool.dev.size } });
    await expect(v.write(pattern(2 * S, 2), C + S)).rejects.toMatchObject({ code: 'EIO' });
    faulty.clearRules();
    expect(pool.alloc.usedClusters).toBe(used);
    const back = Buffer.alloc(2 * C);
    await v.read(back, 0);
    expect(back.subarray(0, S).equals(a)).toBe(true);
    expect(back.subarray(S).every((b) => b === 0)).toBe(true);
    await v.flush();
    expect((await volumeAfterCrash(sim, 1, 2 * C, opts)).equals(back)).toBe(true);
  });

  it('a torn overwrite of durable data reads old or new in every sector, never a checksum error', async () => {
    const { sim, faulty, pool } = await setup();
    const v = await pool.openVolume('v');
    const a = pattern(C, 3);
    await v.write(a, 0);
    await v.flush();
    // The first overwrite asks for the table's intent; the one that tears finds it open.
    const c = pattern(S, 9);
    await v.write(c, 10 * S);
    c.copy(a, 10 * S);
    expect(pool.store.openIntents).toBeGreaterThan(0);
    faulty.addRule({ ops: ['write'], times: 1, error: 'EIO', torn: true, range: { start: pool.header.dataStart * C, end: pool.dev.size } });
    const b = pattern(2 * S, 4);
    await expect(v.write(b, 2 * S)).rejects.toMatchObject({ code: 'EIO' });
    const back = Buffer.alloc(C);
    await v.read(back, 0);
    const expected = Buffer.from(a);
    b.copy(expected, 2 * S);
    for (let s = 0; s < C; s += 512) {
      const got = back.subarray(s, s + 512);
      expect(got.equals(a.subarray(s, s + 512)) || got.equals(expected.subarray(s, s + 512)), `sector ${s / 512}`).toBe(true);
    }
    await v.flush();
    expect((await volumeAfterCrash(sim, 2, C, opts)).equals(back)).toBe(true);
  });

  it('racing commits, every flushed write survives a crash and the pool checks clean', async () => {
    const { sim, pool } = await setup();
    const v = await pool.openVolume('v');
    const size = 4 << 20;
    const model = Buffer.alloc(size);
    const rng = new Rng(5);
    for (let round = 0; round < 6; round++) {
      const jobs: Array<Promise<void>> = [];
      const taken = new Set<number>();
      for (let k = 0; k < 64; k++) {
        // One to four sub-clusters that stay within a cluster, half of them over data written before.
        const n = 1 + rng.below(4);
        const cluster = rng.below(size / C);
        const first = rng.below(C / S - n + 1);
        const at = cluster * C + first * S;
        if (taken.has(cluster)) continue;
        taken.add(cluster);
        const data = pattern(n * S, round * 100 + k);
        data.copy(model, at);
        jobs.push(v.write(data, at));
        if (k % 16 === 8) jobs.push(v.flush());
      }
      await Promise.all(jobs);
    }
    await v.flush();
    const back = Buffer.alloc(size);
    await v.read(back, 0);
    expect(back.equals(model)).toBe(true);
    expect((await volumeAfterCrash(sim, 3, size, opts)).equals(model)).toBe(true);
  });
});
