import { describe, expect, it } from 'vitest';
import { CrashSimulator, MemoryDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';

const opts = { cacheBytes: 8 * 4096, journalBytes: 96 * 1024 };
const SIZE = 600 * 1024;

/** A fresh pool on a crash simulator, a volume created incomplete, and part of an image written into it (not flushed). */
async function filling(): Promise<{ sim: CrashSimulator; pool: Pool; image: Buffer }> {
  const base = new MemoryDevice({ size: 4 << 20 });
  await (await Pool.create(base, { clusterSize: 4096, ...opts })).store.checkpoint();
  const sim = new CrashSimulator(base);
  const pool = await Pool.open(sim, opts);
  await pool.createVolume('v', SIZE, { incomplete: true });
  const image = pattern(SIZE, 42);
  const vol = await pool.openVolume('v');
  for (let at = 0; at < SIZE; at += 64 * 1024) await vol.write(image.subarray(at, Math.min(SIZE, at + 64 * 1024)), at);
  await vol.close();
  return { sim, pool, image };
}

async function readBack(dev: MemoryDevice | CrashSimulator['inner']): Promise<{ incomplete: boolean; data: Buffer }> {
  const pool = await Pool.open(dev, opts);
  const info = await pool.volumeInfo('v');
  const vol = await pool.openVolume('v', { readOnly: true });
  const data = Buffer.alloc(SIZE);
  await vol.read(data, 0);
  await vol.close();
  await pool.close();
  return { incomplete: info.incomplete, data };
}

describe('a volume marked incomplete', () => {
  it('says so in its info and the catalog until completeVolume, across a reopen', async () => {
    const dev = new MemoryDevice({ size: 4 << 20 });
    const pool = await Pool.create(dev, { clusterSize: 4096, ...opts });
    expect((await pool.createVolume('v', SIZE, { incomplete: true })).incomplete).toBe(true);
    expect((await pool.createVolume('w', SIZE)).incomplete).toBe(false);
    // Checkpointed, not closed: a memory device does not open again once closed.
    await pool.store.checkpoint();
    const again = await Pool.open(dev, opts);
    expect((await again.listVolumes()).map((v) => [v.name, v.incomplete])).toEqual([['v', true], ['w', false]]);
    await again.completeVolume('v');
    await again.completeVolume('w');
    await again.store.checkpoint();
    const third = await Pool.open(dev, opts);
    expect((await third.listVolumes()).map((v) => v.incomplete)).toEqual([false, false]);
    await third.close();
  });

  it('a power loss at any point of the copy or of completeVolume never shows complete without all the data', async () => {
    // Each cut lands completeVolume's commit at a different request: data flush, catalog write, journal append, its flush.
    let sawComplete = 0;
    let sawIncomplete = 0;
    for (let cut = 0; cut <= 12; cut++) {
      for (const seed of [1, 2, 3]) {
        const { sim, pool, image } = await filling();
        sim.cutAfter(cut);
        let finished = true;
        try {
          await pool.completeVolume('v');
        } catch (err) {
          expect((err as Error).message).toMatch(/lost power/);
          finished = false;
        }
        const report = await sim.crash(seed);
        const after = await readBack(report.device as MemoryDevice);
        if (finished) expect(after.incomplete).toBe(false);
        if (!after.incomplete) {
          sawComplete++;
          expect(after.data.equals(image)).toBe(true);
        } else sawIncomplete++;
      }
    }
    // Both outcomes were met, so the cut points cover the step that clears the mark.
    expect(sawComplete).toBeGreaterThan(0);
    expect(sawIncomplete).toBeGreaterThan(0);
  });
});
