import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createSnapshots } from '../../src/snapshot/index.js';
import { memoryPool } from '../support/pool.js';
import { sendChain } from '../../src/migrate/send.js';
import { receiveChain } from '../../src/migrate/receive.js';
import { chunked, Collect, contents } from './chain-support.js';

/**
 * Random histories (writes, discards, zero writes, snapshots) sent in random
 * splits: a whole stream up to some snapshot, then incrementals from there
 * on, some of them cut short and resumed with their token. Every snapshot
 * received must read as the model says it was taken, and so must the head.
 */

const SIZE = 1 << 20;
const BLOCK = 4096;

type Op = { kind: 'write'; block: number; blocks: number; byte: number } | { kind: 'discard' | 'zero'; block: number; blocks: number } | { kind: 'snapshot' };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('write' as const), block: fc.nat(SIZE / BLOCK - 1), blocks: fc.integer({ min: 1, max: 40 }), byte: fc.integer({ min: 1, max: 255 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('discard' as const, 'zero' as const), block: fc.nat(SIZE / BLOCK - 1), blocks: fc.integer({ min: 1, max: 64 }) }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'snapshot' as const }) },
);

describe('send and receive against a model', () => {
  it('every snapshot of a random history arrives as it was taken, in any split of incremental streams', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 3, maxLength: 24 }), fc.array(fc.boolean(), { minLength: 24, maxLength: 24 }), fc.array(fc.double({ min: 0.05, max: 0.95, noNaN: true }), { minLength: 24, maxLength: 24 }), async (ops, splits, cuts) => {
        const home = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-send-model-'));
        const a = (await memoryPool({ deviceSize: 16 << 20 })).pool;
        const b = (await memoryPool({ deviceSize: 16 << 20 })).pool;
        try {
          await a.createVolume('v', SIZE);
          const model = Buffer.alloc(SIZE);
          const taken: Array<{ name: string; bytes: Buffer }> = [];
          const vol = await a.openVolume('v');
          try {
            for (const o of ops) {
              if (o.kind === 'snapshot') {
                await vol.flush();
                const name = `s${taken.length}`;
                await createSnapshots(a, [{ volume: 'v', snapshot: name }]);
                taken.push({ name, bytes: Buffer.from(model) });
                continue;
              }
              const at = o.block * BLOCK;
              const len = Math.min(o.blocks * BLOCK, SIZE - at);
              if (o.kind === 'write') {
                const data = Buffer.alloc(len, o.byte);
                await vol.write(data, at);
                data.copy(model, at);
              } else {
                if (o.kind === 'discard') await vol.discard(at, len);
                else await vol.writeZeroes(at, len, { mayUnmap: false });
                model.fill(0, at, at + len);
              }
            }
            await vol.flush();
          } finally {
            await vol.close();
          }
          if (taken.length === 0) return;
          // Cut the snapshots into runs: each run is one stream, from the end of the one before.
          let from: string | null = null;
          for (let i = 0; i < taken.length; i++) {
            if (i < taken.length - 1 && splits[i]) continue;
            const to = taken[i]!.name;
            const out = new Collect();
            await sendChain(a, 'a', { volume: 'v', to, from }, out);
            const stream = out.bytes();
            const ctx = { poolName: 'b', home, checkpointBytes: 16 << 10 };
            if (splits[(i + 7) % splits.length]) {
              const cut = Math.floor(stream.length * cuts[i]!);
              const token = await receiveChain(b, ctx, 'w', chunked(stream.subarray(0, cut), 8192)).then(
                () => null,
                (err: unknown) => (err as { token?: string }).token ?? null,
              );
              if (token !== null) {
                const rest = new Collect();
                await sendChain(a, 'a', { volume: 'v', to, from, resume: token }, rest);
                await receiveChain(b, ctx, 'w', chunked(rest.bytes()));
              } else {
                // Cut inside the header: nothing began, the whole stream goes again.
                await receiveChain(b, ctx, 'w', chunked(stream));
              }
            } else {
              await receiveChain(b, ctx, 'w', chunked(stream));
            }
            from = to;
          }
          for (const s of taken) expect((await contents(b, `w@${s.name}`)).equals(s.bytes), `w@${s.name}`).toBe(true);
          expect((await contents(b, 'w')).equals(taken[taken.length - 1]!.bytes)).toBe(true);
          expect((await b.check()).problems).toEqual([]);
        } finally {
          await a.close();
          await b.close();
          fs.rmSync(home, { recursive: true, force: true });
        }
      }),
      { numRuns: 15 },
    );
  }, 120_000);
});
