import { describe, expect, it } from 'vitest';
import { MemoryDevice, Rng } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { cloneVolume, createSnapshots, deleteSnapshot, flattenVolume, openFrozen, revertSnapshot } from '../../src/snapshot/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { reopenable } from '../support/pool.js';

const SIZE = 3 * 204 * 4096;

/** Writes, discards and reads on a volume until stopped, keeping its model; reads are checked as they come. */
function busy(pool: Pool, name: string, model: Uint8Array, seed: number): { stop: () => Promise<void> } {
  let stopped = false;
  const rng = new Rng(seed);
  const done = (async () => {
    const h = await pool.openVolume(name);
    for (let k = 0; !stopped; k++) {
      const at = rng.below(SIZE / 512) * 512;
      const len = Math.min(SIZE - at, 512 * (1 + rng.below(24)));
      const r = rng.below(10);
      if (r < 6) {
        const data = pattern(len, k * 7 + seed);
        model.set(data, at);
        await h.write(data, at);
      } else if (r < 7) {
        model.fill(0, at, at + len);
        await h.discard(at, len);
      } else {
        const b = Buffer.alloc(len);
        await h.read(b, at);
        // The model was updated before each write began and no write is in flight here: they must agree.
        expect(Buffer.compare(b, model.subarray(at, at + len)), `read ${at}+${len} of ${name}`).toBe(0);
      }
      if (k % 16 === 0) await h.flush();
      await new Promise((r) => setImmediate(r));
    }
    await h.close();
  })();
  return {
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}

async function readAll(h: { read(b: Uint8Array, o: number): Promise<void>; size: number; close(): Promise<void> }): Promise<Buffer> {
  const b = Buffer.alloc(h.size);
  await h.read(b, 0);
  await h.close();
  return b;
}

describe('chain operations while the volumes they change are being written', () => {
  it('merges into a volume being written, trims a shared base, flattens a clone being written: every byte as modelled, check clean', async () => {
    for (const seed of [1, 2, 3]) {
      const pool = await Pool.create(new MemoryDevice({ size: 48 << 20 }), { clusterSize: 4096, cacheBytes: 12 * 4096 });
      await pool.createVolume('v', SIZE);
      const v = new Uint8Array(SIZE);
      const snaps = new Map<string, Uint8Array>();
      let w = busy(pool, 'v', v, seed);
      for (const s of ['a', 'b', 'c', 'd']) {
        await new Promise((r) => setTimeout(r, 5));
        await w.stop();
        await createSnapshots(pool, [{ volume: 'v', snapshot: s }]);
        snaps.set(s, v.slice());
        w = busy(pool, 'v', v, seed + s.charCodeAt(0));
      }
      await cloneVolume(pool, { volume: 'v', snapshot: 'a' }, 'k');
      const k = snaps.get('a')!.slice();
      const kw = busy(pool, 'k', k, seed + 100);
      // Merges into the written top (d into v), in the middle (b into c), and a base shared after a revert.
      await deleteSnapshot(pool, { volume: 'v', snapshot: 'd' });
      snaps.delete('d');
      await deleteSnapshot(pool, { volume: 'v', snapshot: 'b' });
      snaps.delete('b');
      await flattenVolume(pool, 'k');
      await w.stop();
      await revertSnapshot(pool, { volume: 'v', snapshot: 'c' });
      v.set(snaps.get('c')!);
      w = busy(pool, 'v', v, seed + 200);
      await deleteSnapshot(pool, { volume: 'v', snapshot: 'c' });
      snaps.delete('c');
      await new Promise((r) => setTimeout(r, 10));
      await w.stop();
      await kw.stop();
      expect(Buffer.compare(await readAll(await pool.openVolume('v')), v), 'v').toBe(0);
      expect(Buffer.compare(await readAll(await pool.openVolume('k')), k), 'k').toBe(0);
      for (const [s, m] of snaps) expect(Buffer.compare(await readAll(await openFrozen(pool, { volume: 'v', snapshot: s })), m), `v@${s}`).toBe(0);
      expect((await pool.check()).problems).toEqual([]);
      expect((await pool.volumeInfo('k')).layers).toHaveLength(1);
      await pool.close();
    }
  }, 120_000);
});

describe('a snapshot delete merging at its rate limit', () => {
  it('does not hold up other chain commands on the pool, reports progress, and resumes at the next open when cancelled', async () => {
    const dev = new MemoryDevice({ size: 48 << 20 });
    const pool = await Pool.create(reopenable(dev), { clusterSize: 4096 });
    await pool.createVolume('v', SIZE);
    await pool.createVolume('u', SIZE);
    const h = await pool.openVolume('v');
    await h.write(pattern(SIZE, 1), 0);
    await createSnapshots(pool, [{ volume: 'v', snapshot: 'a' }]);
    await h.write(pattern(SIZE / 2, 2), 0);
    await h.close();
    const progress: number[] = [];
    let merged = false;
    // Three tables of 816 KiB each at 1 MiB/s: a few seconds of merging.
    const merge = deleteSnapshot(pool, { volume: 'v', snapshot: 'a' }, { rateBytesPerSec: 1 << 20, onProgress: (p) => progress.push(p.done) }).then(() => (merged = true));
    await createSnapshots(pool, [{ volume: 'u', snapshot: 'meanwhile' }]);
    await cloneVolume(pool, { volume: 'u', snapshot: 'meanwhile' }, 'w');
    expect(merged, 'the snapshot and the clone waited for the merge').toBe(false);
    await merge;
    expect(progress.length).toBeGreaterThan(1);
    expect(progress).toEqual([...progress].sort((x, y) => x - y));

    // Cancelled half way: the name is gone at once, the rest of the merge is done by the next open.
    const g = await pool.openVolume('u');
    await g.write(pattern(SIZE, 3), 0);
    await g.close();
    await createSnapshots(pool, [{ volume: 'u', snapshot: 'b' }]);
    const u = await pool.openVolume('u');
    await u.write(pattern(SIZE / 3, 4), 0);
    await u.close();
    const stop = new AbortController();
    const cancelled = deleteSnapshot(pool, { volume: 'u', snapshot: 'b' }, { rateBytesPerSec: 1 << 20, signal: stop.signal, onProgress: () => stop.abort() });
    await expect(cancelled).rejects.toThrow();
    expect(pool.catalogNow.snapshots.map((s) => s.name).sort()).toEqual(['meanwhile']);
    await pool.close();
    const again = await Pool.open(reopenable(dev));
    await again.reclaimAtOpen.done;
    expect(again.reclaimAtOpen.layers).toBe(1);
    expect((await again.check()).problems).toEqual([]);
    const want = pattern(SIZE, 3);
    pattern(SIZE / 3, 4).copy(want, 0);
    expect(Buffer.compare(await readAll(await again.openVolume('u')), want)).toBe(0);
    expect((await again.volumeInfo('u')).layers.map((l) => l.id)).toHaveLength(2);
    await again.close();
  }, 60_000);
});
