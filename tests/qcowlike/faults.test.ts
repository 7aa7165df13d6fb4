import { describe, expect, it } from 'vitest';
import { CrashSimulator, FaultyDevice, MemoryDevice, type FaultRule } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { volumeAfterCrash } from '../support/pool.js';

const C = 65536;
const opts = { cacheBytes: 64 * C };

/** A clean pool with volume `v` on a memory device, reopened through a crash simulator and a faulty device. */
async function setup(volumeBytes = 8 << 20, journalBytes?: number): Promise<{ sim: CrashSimulator; faulty: FaultyDevice; pool: Pool; base: MemoryDevice }> {
  const base = new MemoryDevice({ size: 64 << 20 });
  const created = await Pool.create(base, { clusterSize: C, journalBytes, ...opts });
  await created.createVolume('v', volumeBytes);
  await created.store.checkpoint();
  const sim = new CrashSimulator(base);
  const faulty = new FaultyDevice(sim, { seed: 7 });
  const pool = await Pool.open(faulty, opts);
  return { sim, faulty, pool, base };
}

/** The first byte past every cluster in use: writes from here on go into space the host has not given yet. */
async function firstFreeByte(pool: Pool): Promise<number> {
  let c = pool.header.totalClusters - 1;
  while (c > 0 && !pool.alloc.isUsed(c)) c--;
  return (c + 1) * C;
}

const journalRange = (pool: Pool): FaultRule['range'] => ({ start: pool.header.journalStart * C, end: (pool.header.journalStart + pool.header.journalClusters) * C });

describe('a failing device never costs acknowledged data', () => {
  it('a data write refused for lack of space leaves nothing in the map that the device does not hold', async () => {
    const { sim, faulty, pool } = await setup();
    const v = await pool.openVolume('v');
    const a = pattern(1 << 20, 1);
    await v.write(a, 0);
    await v.flush();
    // The host is full: every write into a cluster not yet written fails (a retry after a checkpoint too).
    faulty.addRule({ ops: ['write'], error: 'ENOSPC', range: { start: await firstFreeByte(pool), end: pool.dev.size } });
    await expect(v.write(pattern(1 << 20, 2), 1 << 20)).rejects.toMatchObject({ code: 'ENOSPC' });
    faulty.clearRules();
    // Before the fix the map kept the refused clusters with their new checksums: a read failed its checksum.
    const back = Buffer.alloc(2 << 20);
    await v.read(back, 0);
    expect(back.subarray(0, 1 << 20).equals(a)).toBe(true);
    expect(back.subarray(1 << 20).every((b) => b === 0)).toBe(true);
    await v.flush();
    const after = await volumeAfterCrash(sim, 1, 2 << 20, opts);
    expect(after.equals(back)).toBe(true);
  });

  it('a torn overwrite reads old or new in every sector, never a checksum error', async () => {
    const { sim, faulty, pool } = await setup();
    const v = await pool.openVolume('v');
    const a = pattern(256 << 10, 3);
    await v.write(a, 0);
    await v.flush();
    faulty.addRule({ ops: ['write'], times: 1, error: 'EIO', torn: true, range: { start: pool.header.dataStart * C, end: pool.dev.size } });
    const b = pattern(256 << 10, 4);
    await expect(v.write(b, 0)).rejects.toMatchObject({ code: 'EIO' });
    const back = Buffer.alloc(256 << 10);
    await v.read(back, 0);
    for (let s = 0; s < back.length; s += 512) {
      const got = back.subarray(s, s + 512);
      expect(got.equals(a.subarray(s, s + 512)) || got.equals(b.subarray(s, s + 512)), `sector ${s / 512}`).toBe(true);
    }
    await v.flush();
    expect((await volumeAfterCrash(sim, 2, 256 << 10, opts)).equals(back)).toBe(true);
  });

  it('a commit whose journal append failed does not let the next commit reference what it described', async () => {
    // The reported failure: a full disk fails one commit; a later write and flush succeed; after a
    // restart replay needed a metadata block that had never been written, and the pool would not open.
    const { sim, faulty, pool } = await setup();
    const v = await pool.openVolume('v');
    const a = pattern(2 << 20, 5);
    await v.write(a, 0);
    await v.flush();
    const b = pattern(C, 6);
    // A new cluster: its map entry and bitmap bit are in the transaction that fails.
    await v.write(b, 4 << 20);
    faulty.addRule({ ops: ['write'], times: 1, error: 'ENOSPC', range: journalRange(pool) });
    await expect(v.flush()).rejects.toMatchObject({ code: 'ENOSPC' });
    const c = pattern(4096, 7);
    await v.write(c, 0);
    await v.flush();
    const after = await volumeAfterCrash(sim, 3, 5 << 20, opts);
    expect(after.subarray(0, 4096).equals(c)).toBe(true);
    expect(after.subarray(4096, 2 << 20).equals(a.subarray(4096))).toBe(true);
    expect(after.subarray(4 << 20, (4 << 20) + C).equals(b)).toBe(true);
  });

  it('a volume created beyond the first table: the append failing with the INIT of its new table, then a later commit', async () => {
    const { sim, faulty, pool } = await setup(256 << 20);
    const v = await pool.openVolume('v');
    await v.write(pattern(C, 8), 0);
    await v.flush();
    // 200 MiB in: a new L2 table, whose INIT is in the transaction that fails.
    const far = 200 << 20;
    const d = pattern(C, 9);
    await v.write(d, far);
    faulty.addRule({ ops: ['write'], times: 1, error: 'EIO', range: journalRange(pool) });
    await expect(v.flush()).rejects.toMatchObject({ code: 'EIO' });
    await v.write(pattern(4096, 10), far + C);
    await v.flush();
    const { device } = await sim.crash(4);
    const reopened = await Pool.open(device, opts);
    expect((await reopened.check()).problems).toEqual([]);
    const v2 = await reopened.openVolume('v');
    const back = Buffer.alloc(C);
    await v2.read(back, far);
    expect(back.equals(d)).toBe(true);
    await v2.close();
  });

  it('after a failed device flush the pool takes no more writes, and what was flushed before survives', async () => {
    const { sim, faulty, pool } = await setup();
    const v = await pool.openVolume('v');
    const a = pattern(1 << 20, 11);
    await v.write(a, 0);
    await v.flush();
    await v.write(pattern(1 << 20, 12), 1 << 20);
    faulty.addRule({ ops: ['flush'], times: 1 });
    await expect(v.flush()).rejects.toMatchObject({ code: 'EIO' });
    // A flush that "succeeds" after a failed one proves nothing on Linux: refuse instead of lying.
    await expect(v.write(pattern(4096, 13), 0)).rejects.toThrow(/flush of the pool's device failed/);
    await expect(v.flush()).rejects.toThrow(/flush of the pool's device failed/);
    await expect(pool.createVolume('w', 1 << 20)).rejects.toThrow(/flush of the pool's device failed/);
    const after = await volumeAfterCrash(sim, 5, 1 << 20, opts);
    expect(after.equals(a)).toBe(true);
  });

  it('a catalog write that failed is written again before any commit can name it', async () => {
    const { sim, faulty, pool } = await setup();
    // Fail the next write, whatever it is: creating a volume writes its catalog first.
    faulty.addRule({ ops: ['write'], times: 1, error: 'ENOSPC' });
    await expect(pool.createVolume('w', 1 << 20)).rejects.toMatchObject({ code: 'ENOSPC' });
    const v = await pool.openVolume('v');
    await v.write(pattern(4096, 14), 0);
    await v.flush();
    const { device } = await sim.crash(6);
    const reopened = await Pool.open(device, opts);
    expect((await reopened.check()).problems).toEqual([]);
    // The failed create may have taken effect (its catalog was written at the next commit) or not; the pool is whole either way.
    const names = (await reopened.listVolumes()).map((x) => x.name);
    expect(names).toContain('v');
  });

  it('a checkpoint that cannot write home does not fail the commit that triggered it', async () => {
    // A small journal, so that commits soon ask for checkpoints.
    const { sim, faulty, pool } = await setup(16 << 20, 256 << 10);
    const v = await pool.openVolume('v');
    await v.write(pattern(1 << 20, 15), 0);
    await v.flush();
    // Every write to the double-write area fails from now on: checkpoints cannot run.
    const dw = { start: pool.header.dwStart * C, end: (pool.header.dwStart + pool.header.dwClusters) * C };
    faulty.addRule({ ops: ['write'], error: 'ENOSPC', range: dw });
    const data = pattern(4 << 20, 16);
    const before = pool.store.failedCheckpoints;
    for (let i = 0; i < 40 && pool.store.failedCheckpoints === before; i++) {
      await v.write(data, 0);
      for (let k = 0; k < 8; k++) await v.write(data.subarray(0, 4096), (4 << 20) + (i * 8 + k) * 4096);
      await v.flush();
    }
    expect(pool.store.failedCheckpoints).toBeGreaterThan(before);
    // Overwrites keep going under the intents the journal still holds (no commit storm asking for them again).
    await v.write(data.subarray(0, 4096), 0);
    await v.flush();
    await expect(pool.store.checkpoint()).rejects.toMatchObject({ code: 'ENOSPC' });
    await v.write(data.subarray(0, 4096), 12 << 20);
    await v.flush();
    // Once the host has room again, a checkpoint goes through and the journal empties.
    faulty.clearRules();
    await pool.store.checkpoint();
    expect(pool.store.journal.used).toBe(512);
    const after = await volumeAfterCrash(sim, 7, 13 << 20, opts);
    expect(after.subarray(0, 4 << 20).equals(data)).toBe(true);
    expect(after.subarray(12 << 20, (12 << 20) + 4096).equals(data.subarray(0, 4096))).toBe(true);
  });
});
