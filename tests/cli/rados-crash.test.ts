import fc from 'fast-check';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withPool } from '../../src/host/open-pool.js';
import { NbdClient } from '../../src/nbd/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { cephConf, TEST_CEPH_POOL, uniqueName } from '../support/ceph.js';
import { propertyRuns, scratchDir } from '../support/scratch.js';
import { startServe } from '../nbd/support.js';
import { buildCli, ok } from './strata.js';

/**
 * A crash on RADOS is the owning process killed: `strata serve` takes
 * writes and flushes over NBD and is SIGKILLed at a random moment, with
 * writes in flight; another home then opens the pool (the dead holder is
 * fenced at open) and every block holds what the last acknowledged flush
 * left there or a value written after it, and check is clean.
 */

const conf = cephConf();
const BLOCK = 4096;
const BLOCKS = 2048; // an 8 MiB volume

interface Batch {
  /** Disjoint runs of blocks written side by side, then perhaps a flush. */
  writes: { block: number; blocks: number; seed: number }[];
  flush: boolean;
}

const batchArb: fc.Arbitrary<Batch> = fc.record({
  writes: fc.uniqueArray(fc.record({ block: fc.integer({ min: 0, max: BLOCKS / 32 - 1 }), blocks: fc.integer({ min: 1, max: 32 }), seed: fc.integer() }), {
    minLength: 1,
    maxLength: 6,
    selector: (w) => w.block,
  }).map((ws) => ws.map((w) => ({ ...w, block: w.block * 32 }))),
  flush: fc.boolean(),
});

describe.skipIf(conf === undefined)('a served RADOS pool whose server is killed', () => {
  const scratch = scratchDir('rados-crash');
  const homeA = path.join(scratch.dir, 'a');
  const homeB = path.join(scratch.dir, 'b');
  const pool = uniqueName('crash');
  beforeAll(() => {
    buildCli();
    ok(homeA, ['pool', 'create', pool, '--rados', TEST_CEPH_POOL, '--ceph-conf', conf!, '--size', '256M']);
    ok(homeA, ['volume', 'create', `${pool}/v`, String(BLOCK * BLOCKS)]);
    ok(homeB, ['pool', 'import', pool, '--rados', TEST_CEPH_POOL, '--ceph-conf', conf!]);
  });
  afterAll(() => {
    ok(homeB, ['pool', 'delete', pool, '--force']);
    scratch.cleanup();
  });

  it('keeps every acknowledged flush, whatever was in flight at the kill', async () => {
    // What each block may hold: the value at the last acknowledged flush, then whatever was written since.
    const durable = new Map<number, number>();
    const since = new Map<number, number[]>();
    await fc.assert(
      fc.asyncProperty(fc.array(batchArb, { minLength: 1, maxLength: 8 }), fc.integer({ min: 0, max: 8 }), async (batches, killAfter) => {
        const serve = await startServe([pool, '--home', homeA, '--export', 'v', '--listen', '127.0.0.1:0']);
        const url = new URL(serve.uri);
        const client = await NbdClient.connect({ host: url.hostname, port: Number(url.port), export: 'v' });
        let sent = 0;
        try {
          for (const b of batches) {
            const inFlight = b.writes.map((w) => {
              for (let i = 0; i < w.blocks; i++) since.set(w.block + i, [...(since.get(w.block + i) ?? []), w.seed * 7919 + i]);
              return client.write(blockData(w.seed, w.blocks), w.block * BLOCK);
            });
            if (sent++ === killAfter) {
              // Kill with these writes in flight: they may or may not have landed.
              const settled = Promise.allSettled(inFlight);
              await serve.stop('SIGKILL');
              await settled;
              break;
            }
            await Promise.all(inFlight);
            if (b.flush) {
              await client.flush();
              for (const [block, values] of since) durable.set(block, values[values.length - 1]!);
              since.clear();
            }
          }
        } finally {
          await serve.stop('SIGKILL');
          await client.disconnect().catch(() => undefined);
        }
        // Another home opens the pool; the dead owner is fenced on the way.
        await withPool(homeB, pool, { readOnly: false, onMessage: () => undefined }, async ({ pool: p }) => {
          expect((await p.check()).problems).toEqual([]);
          const v = await p.openVolume('v');
          const all = Buffer.alloc(BLOCK * BLOCKS);
          await v.read(all, 0);
          await v.close();
          for (let block = 0; block < BLOCKS; block++) {
            const got = all.subarray(block * BLOCK, (block + 1) * BLOCK);
            const allowed = [durable.get(block), ...(since.get(block) ?? [])];
            const holds = (id: number | undefined): boolean => (id === undefined ? got.every((x) => x === 0) : got.equals(oneBlock(id)));
            const found = allowed.findIndex(holds);
            expect(found, `block ${block}: neither the flushed value nor a later write`).toBeGreaterThanOrEqual(0);
            // What this open read is what the next run starts from: the open committed it.
            const id = allowed[found];
            if (id === undefined) durable.delete(block);
            else durable.set(block, id);
          }
          since.clear();
        });
      }),
      { numRuns: propertyRuns(12, 4) },
    );
  }, 600_000);
});

/** Block i of a write of seed s holds pattern id s·7919+i, so every block's content names the write it came from. */
function blockData(seed: number, blocks: number): Buffer {
  return Buffer.concat(Array.from({ length: blocks }, (_, i) => oneBlock(seed * 7919 + i)));
}

function oneBlock(id: number): Buffer {
  return pattern(BLOCK, id);
}
