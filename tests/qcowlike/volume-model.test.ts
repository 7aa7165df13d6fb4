import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice, Rng } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { runVolumeModel, volumeOpArb } from '../support/volume-model.js';
import { propertyRuns } from '../support/scratch.js';

describe('volume against a plain byte array', () => {
  it('matches the model through writes, zeroes, discards, resizes, flushes and reopens; check stays clean', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(4096, 65536), fc.array(volumeOpArb, { minLength: 1, maxLength: 40 }), (clusterSize, ops) =>
        runVolumeModel(new MemoryDevice({ size: 24 << 20 }), clusterSize, ops),
      ),
      { numRuns: propertyRuns(400) },
    );
  }, 600_000);

  it('grows online while writes land everywhere, even when the L1 table must move and is not all in memory', async () => {
    // 4 KiB clusters: an L1 block covers 510 tables of 204 clusters (about 407 MiB); growing past that moves the L1.
    const l1Span = 510 * 204 * 4096;
    const dev = new MemoryDevice({ size: 64 << 20 });
    const pool = await Pool.create(dev, { clusterSize: 4096, cacheBytes: 8 * 4096 });
    await pool.createVolume('v', l1Span + (1 << 20));
    const vol = await pool.openVolume('v');
    const rng = new Rng(3);
    const written = new Map<number, Buffer>();
    const writer = async (n: number): Promise<void> => {
      for (let k = 0; k < n; k++) {
        const at = rng.below((l1Span + (1 << 20)) / 4096) * 4096;
        const data = pattern(4096, k * 31 + at);
        written.set(at, data);
        await vol.write(data, at);
      }
    };
    for (const size of [2 * l1Span, 3 * l1Span + (5 << 20)]) {
      await Promise.all([writer(150), pool.resizeVolume('v', size), writer(150)]);
    }
    const back = Buffer.alloc(4096);
    for (const [at, data] of written) {
      await vol.read(back, at);
      expect(back.equals(data), `data at ${at}`).toBe(true);
    }
    await vol.close();
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
  });

  it('refuses to shrink over data without force, and names what would be lost', async () => {
    const pool = await Pool.create(new MemoryDevice({ size: 16 << 20 }));
    await pool.createVolume('v', 1 << 20);
    const vol = await pool.openVolume('v');
    await vol.write(Buffer.alloc(4096, 1), 900 * 1024);
    await expect(pool.resizeVolume('v', 512 * 1024)).rejects.toThrow(/would discard 4096 allocated bytes.*with force/);
    await pool.resizeVolume('v', 950 * 1024 - (950 * 1024) % 512);
    await vol.close();
    await pool.close();
  });
});

