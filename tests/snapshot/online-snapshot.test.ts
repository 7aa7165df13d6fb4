import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { createSnapshots, openFrozen } from '../../src/snapshot/index.js';

const REGION = 200 * 1024;
const WRITERS = 6;

/**
 * Writers rewrite their own region (several clusters, across table and
 * cluster edges) with an increasing tag while snapshots are taken: each
 * snapshot must hold every region whole at one tag (no request split by the
 * snapshot point), at least the last tag acknowledged before the snapshot
 * began and at most the last one issued before it returned.
 */
describe('a snapshot of a volume being written', () => {
  it('lands between requests: every write wholly before or wholly after it, in a group too', async () => {
    const pool = await Pool.create(new MemoryDevice({ size: 64 << 20 }), { clusterSize: 65536 });
    await pool.createVolume('a', WRITERS * REGION + 4096);
    await pool.createVolume('b', WRITERS * REGION + 4096);
    const vols = { a: await pool.openVolume('a'), b: await pool.openVolume('b') };
    const acked = { a: new Array<number>(WRITERS).fill(0), b: new Array<number>(WRITERS).fill(0) };
    const issued = { a: new Array<number>(WRITERS).fill(0), b: new Array<number>(WRITERS).fill(0) };
    let stop = false;
    const writer = async (v: 'a' | 'b', w: number): Promise<void> => {
      for (let tag = 1; !stop; tag++) {
        issued[v][w] = tag;
        await vols[v].write(Buffer.alloc(REGION, tag & 255), 4096 + w * REGION);
        acked[v][w] = tag;
        // A memory device answers without touching the event loop: let timers run.
        await new Promise((r) => setImmediate(r));
      }
    };
    const writers = [...Array(WRITERS).keys()].flatMap((w) => [writer('a', w), writer('b', w)]);
    const taken: Array<{ name: string; low: Record<'a' | 'b', number[]>; high: Record<'a' | 'b', number[]> }> = [];
    for (let k = 0; k < 12; k++) {
      await new Promise((r) => setTimeout(r, 2));
      const low = { a: [...acked.a], b: [...acked.b] };
      await createSnapshots(pool, [
        { volume: 'a', snapshot: `s${k}` },
        { volume: 'b', snapshot: `s${k}` },
      ]);
      taken.push({ name: `s${k}`, low, high: { a: [...issued.a], b: [...issued.b] } });
    }
    stop = true;
    await Promise.all(writers);
    for (const t of taken) {
      for (const v of ['a', 'b'] as const) {
        const h = await openFrozen(pool, { volume: v, snapshot: t.name });
        const back = Buffer.alloc(h.size);
        await h.read(back, 0);
        await h.close();
        for (let w = 0; w < WRITERS; w++) {
          const region = back.subarray(4096 + w * REGION, 4096 + (w + 1) * REGION);
          const tag = region[0]!;
          expect(region.every((x) => x === tag), `${v}@${t.name} region ${w} is torn`).toBe(true);
          // Tags wrap at 256: compare within the window the writers could have moved.
          const ok = [...Array(t.high[v][w]! - t.low[v][w]! + 1).keys()].some((d) => ((t.low[v][w]! + d) & 255) === tag);
          expect(ok, `${v}@${t.name} region ${w} holds tag ${tag}, outside ${t.low[v][w]}..${t.high[v][w]}`).toBe(true);
        }
      }
    }
    await vols.a.close();
    await vols.b.close();
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
  }, 15_000);
});
