import { describe, expect, it } from 'vitest';
import { MemoryDevice, Rng } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { cloneVolume, createSnapshots, deleteSnapshot, flattenVolume, openFrozen, revertSnapshot } from '../../src/snapshot/index.js';
import { pattern } from '../support/blockdev-contract.js';

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
