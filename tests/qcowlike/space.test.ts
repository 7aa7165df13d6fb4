import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('space');
afterAll(() => scratch.cleanup());
const allocated = (p: string): number => fs.statSync(p).blocks * 512;

describe('thin provisioning and space reclamation on a pool file', () => {
  it('a 1 TiB volume costs nothing until written; zeroes allocate nothing', async () => {
    const file = path.join(scratch.dir, 'thin.pool');
    const pool = await Pool.create(FileDevice.create(file, { size: 8 * 2 ** 30 }));
    const before = allocated(file);
    await pool.createVolume('big', 2 ** 40);
    const vol = await pool.openVolume('big');
    await vol.writeZeroes(0, 1 << 30, { mayUnmap: false });
    await vol.flush();
    expect((await pool.volumeInfo('big')).allocatedBytes).toBe(0);
    expect(allocated(file) - before).toBeLessThan(2 << 20);
    await vol.close();
    await pool.close();
  });

  it('discard hands the space back to the host file system (du falls) and it is reused', async () => {
    const file = path.join(scratch.dir, 'discard.pool');
    const pool = await Pool.create(FileDevice.create(file, { size: 1 << 30 }));
    await pool.createVolume('v', 256 << 20);
    const vol = await pool.openVolume('v');
    const chunk = Buffer.alloc(1 << 20, 0x42);
    for (let i = 0; i < 64; i++) await vol.write(chunk, i << 20);
    await vol.flush();
    await pool.store.checkpoint();
    const full = allocated(file);
    expect(full).toBeGreaterThan(64 << 20);
    await vol.discard(0, 64 << 20);
    await vol.flush();
    await pool.store.checkpoint();
    const after = allocated(file);
    expect(full - after).toBeGreaterThan(60 << 20);
    expect((await pool.volumeInfo('v')).allocatedBytes).toBe(0);
    const used = pool.stats().usedClusters;
    for (let i = 0; i < 64; i++) await vol.write(chunk, i << 20);
    await vol.flush();
    await pool.store.checkpoint();
    expect(pool.stats().usedClusters - used).toBe(64 * 16);
    expect(allocated(file)).toBeLessThan(full + (4 << 20));
    await vol.close();
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
  });

  it('rewriting the same data over and over leaks nothing and does not grow the pool', async () => {
    const file = path.join(scratch.dir, 'rewrite.pool');
    const pool = await Pool.create(FileDevice.create(file, { size: 1 << 30 }));
    await pool.createVolume('v', 32 << 20);
    const vol = await pool.openVolume('v');
    const chunk = Buffer.alloc(1 << 20, 1);
    let peak = 0;
    for (let round = 0; round < 6; round++) {
      chunk.fill(round);
      for (let i = 0; i < 32; i++) await vol.write(chunk, i << 20);
      // Partial overwrites of durable data too (the journaled path).
      for (let i = 0; i < 200; i++) await vol.write(Buffer.alloc(4096, round + 100), ((i * 7919) % 8000) * 4096);
      await vol.flush();
      peak = Math.max(peak, pool.stats().usedClusters);
    }
    await pool.store.checkpoint();
    const report = await pool.check();
    expect(report.problems).toEqual([]);
    expect(report.leakedClusters).toBe(0);
    // 32 MiB of data is 512 clusters. Replaced clusters wait for a checkpoint, which runs once 64 MiB (1024 clusters) wait.
    expect(peak).toBeLessThan(512 + 1024 + 64);
    expect(pool.stats().usedClusters - pool.header.dataStart).toBeLessThan(512 + 32);
    await vol.close();
    await pool.close();
  });
});
