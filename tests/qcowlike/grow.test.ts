import { describe, expect, it } from 'vitest';
import { CrashSimulator, MemoryDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';

const C = 4096;
const SMALL = 8 << 20;
const LARGE = 24 << 20;
const opts = { journalBytes: 96 * 1024, cacheBytes: 64 * C };

/** A pool on SMALL bytes holding one volume with data, its bytes copied onto a LARGE device (a file extended under it). */
async function grownDevice(): Promise<{ dev: MemoryDevice; data: Buffer }> {
  const small = new MemoryDevice({ size: SMALL });
  const pool = await Pool.create(small, { clusterSize: C, ...opts });
  await pool.createVolume('v', 4 << 20);
  const v = await pool.openVolume('v');
  const data = pattern(3 << 20, 7);
  await v.write(data, 64 * 1024);
  await v.close();
  // Settled as a clean close leaves it, but left open: close() would close the device the copy reads from.
  await pool.flush();
  await pool.store.checkpoint();
  const dev = new MemoryDevice({ size: LARGE });
  const buf = Buffer.alloc(1 << 20);
  for (let at = 0; at < SMALL; at += buf.length) {
    await small.read(buf, at);
    await dev.write(buf, at);
  }
  return { dev, data };
}

async function expectWhole(dev: BlockDevice, data: Buffer): Promise<{ totalClusters: number; deviceSize: number }> {
  const pool = await Pool.open(dev, opts);
  const report = await pool.check();
  // A crash between header copies leaves the second sector ahead of the primary: the open rewrites it (repaired), nothing else.
  expect(report.problems.filter((p) => !(p.repaired && p.kind === 'header')), 'check').toEqual([]);
  const v = await pool.openVolume('v', { readOnly: true });
  const back = Buffer.alloc(data.length);
  await v.read(back, 64 * 1024);
  expect(back.equals(data), 'volume data').toBe(true);
  await v.close();
  const s = pool.stats();
  await pool.close();
  return { totalClusters: s.totalClusters, deviceSize: s.totalClusters * C };
}

describe('pool growth', () => {
  it('takes in a grown device: more free space, data and check intact, and the new space is usable after reopening', async () => {
    const { dev, data } = await grownDevice();
    const sim = new CrashSimulator(dev);
    const pool = await Pool.open(sim, opts);
    const before = pool.stats();
    const r = await pool.grow();
    expect(r.totalClusters).toBe(LARGE / C - 2);
    const after = pool.stats();
    expect(after.totalClusters).toBe(LARGE / C - 2);
    expect(after.freeClusters - before.freeClusters).toBe(after.totalClusters - before.totalClusters);
    // Fill past the old end: writes land in the new clusters.
    await pool.createVolume('big', 16 << 20);
    const big = await pool.openVolume('big');
    await big.write(pattern(12 << 20, 3), 0);
    await big.close();
    await pool.flush();
    await pool.store.checkpoint();
    // A power loss after everything was flushed keeps it all: the device as a clean close leaves it, still readable.
    const whole = await expectWhole((await sim.crash(1)).device, data);
    expect(whole.totalClusters).toBe(LARGE / C - 2);
  });

  it('grows while a volume is being written: every write lands, check clean', async () => {
    const { dev, data } = await grownDevice();
    const sim = new CrashSimulator(dev);
    const pool = await Pool.open(sim, opts);
    await pool.createVolume('w', 8 << 20);
    const w = await pool.openVolume('w');
    const chunk = 64 * 1024;
    let stop = false;
    let written = 0;
    const writer = (async () => {
      for (let i = 0; !stop || i < 16; i++) {
        await w.write(pattern(chunk, i), (i % 128) * chunk);
        if (i % 8 === 7) await w.flush();
        written = Math.max(written, i + 1);
      }
    })();
    await pool.grow();
    stop = true;
    await writer;
    await w.flush();
    for (let i = Math.max(0, written - 128); i < written; i++) {
      const back = Buffer.alloc(chunk);
      await w.read(back, (i % 128) * chunk);
      expect(back.equals(pattern(chunk, i)), `chunk ${i % 128}`).toBe(true);
    }
    await w.close();
    await pool.flush();
    await pool.store.checkpoint();
    expect((await expectWhole((await sim.crash(1)).device, data)).totalClusters).toBe(LARGE / C - 2);
  });

  it('refuses a device that has not grown', async () => {
    const small = new MemoryDevice({ size: SMALL });
    const pool = await Pool.create(small, { clusterSize: C, ...opts });
    await expect(pool.grow()).rejects.toThrow(/not larger than the pool/);
    await pool.close();
  });

  it('survives power loss at every request of a growth: the pool opens at the old size or the new, check clean, data intact', async () => {
    let completed = false;
    const seen = new Set<number>();
    for (let cut = 0; !completed; cut++) {
      const { dev, data } = await grownDevice();
      const sim = new CrashSimulator(dev);
      const pool = await Pool.open(sim, opts);
      sim.cutAfter(cut);
      try {
        await pool.grow();
        completed = true;
      } catch (err) {
        expect((err as Error).message).toMatch(/lost power/);
      }
      const report = await sim.crash(cut + 1);
      const { totalClusters } = await expectWhole(report.device, data);
      expect([SMALL / C - 2, LARGE / C - 2]).toContain(totalClusters);
      seen.add(totalClusters);
      if (completed) expect(totalClusters).toBe(LARGE / C - 2);
      expect(cut).toBeLessThan(200);
    }
    // Both outcomes were reached: the cuts did land on each side of the commit point.
    expect([...seen].sort()).toEqual([SMALL / C - 2, LARGE / C - 2].sort());
  });
});
