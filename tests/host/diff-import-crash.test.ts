import fc from 'fast-check';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CrashSimulator, MemoryDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { createSnapshots, listSnapshots } from '../../src/snapshot/index.js';
import { exportDiff } from '../../src/host/diff-export.js';
import { bytesOf } from './diff-scenarios.js';
import { importDiff } from '../../src/host/diff-import.js';
import { memoryPool, reopenable } from '../support/pool.js';
import { propertyRuns } from '../support/scratch.js';

const SIZE = 1 << 20;


async function write(pool: Pool, volume: string, offset: number, fill: number, length: number): Promise<void> {
  const v = await pool.openVolume(volume);
  const b = Buffer.alloc(length, fill);
  for (let i = 0; i + 4 <= length; i += 4096) b.writeUInt32LE(offset + i, i);
  await v.write(b, offset);
  await v.flush();
  await v.close();
}

async function stream(pool: Pool, from: string | null, to: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  const out = new Writable({
    write(c: Buffer, _e, cb): void {
      parts.push(Buffer.from(c));
      cb();
    },
  });
  await exportDiff(pool, 'src', { volume: 'v', from, to }, out);
  return Buffer.concat(parts);
}

async function* chunks(b: Buffer): AsyncGenerator<Buffer> {
  for (let at = 0; at < b.length; at += 65536) yield b.subarray(at, at + 65536);
}

/**
 * Power loss at a random instant of an import-diff (applying records, at a
 * checkpoint, making the TO snapshot), then the pool reopens: check is
 * clean, and running the same stream again ends with the volume equal to TO
 * and TO's snapshot made, whatever the crash kept.
 */
describe('import-diff across a power loss', () => {
  let full: Buffer;
  let incr: Buffer;
  let s1: Buffer;
  let s2: Buffer;
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-diff-crash-'));
  let cases = 0;

  beforeAll(async () => {
    const { pool } = await memoryPool();
    await pool.createVolume('v', SIZE);
    await write(pool, 'v', 0, 0x11, 300_000);
    await write(pool, 'v', 600_000, 0x12, 200_000);
    await createSnapshots(pool, [{ volume: 'v', snapshot: 's1' }]);
    s1 = await bytesOf(pool, 'v');
    await write(pool, 'v', 131_072, 0x21, 262_144);
    const z = await pool.openVolume('v');
    await z.writeZeroes(655_360, 65_536);
    await z.close();
    await createSnapshots(pool, [{ volume: 'v', snapshot: 's2' }]);
    s2 = await bytesOf(pool, 'v');
    full = await stream(pool, null, 's1');
    incr = await stream(pool, 's1', 's2');
    await pool.close();
  });
  afterAll(() => fs.rmSync(home, { recursive: true, force: true }));

  it('a re-run of the stream after the crash finishes the import, on a pool that checks clean', async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.integer({ min: 0, max: 40 }), fc.integer(), async (incremental, cutAfter, seed) => {
        const poolName = `p${cases++}`;
        const base = new MemoryDevice({ size: 16 << 20 });
        const opts = { cacheBytes: 1 << 20, journalBytes: 256 * 1024 };
        const ctx = { poolName, home, checkpointBytes: 64 * 1024 };
        {
          // Closed through a view whose close leaves the memory device as it is.
          const pool = await Pool.create(reopenable(base), { clusterSize: 65536, ...opts });
          if (incremental) await importDiff(pool, ctx, 'w', chunks(full));
          else {
            // The pool's first snapshot also sets its feature bit in the header: that upgrade has crash tests of its own.
            await pool.createVolume('other', 65536);
            await createSnapshots(pool, [{ volume: 'other', snapshot: 'x' }]);
          }
          await pool.close();
        }
        const sim = new CrashSimulator(base);
        const pool = await Pool.open(sim, opts);
        const theStream = incremental ? incr : full;
        const want = incremental ? s2 : s1;
        const wantSnap = incremental ? 's2' : 's1';
        sim.cutAfter(cutAfter);
        let finished = false;
        try {
          await importDiff(pool, ctx, 'w', chunks(theStream));
          finished = true;
        } catch (err) {
          expect((err as Error).message).toMatch(/lost power|EIO/i);
        }
        const report = await sim.crash(seed);
        const reopened = await Pool.open(report.device, opts);
        expect((await reopened.check()).problems).toEqual([]);
        if (finished) {
          // It returned, so what it made is durable.
          await expect(importDiff(reopened, ctx, 'w', chunks(theStream))).rejects.toThrow(/end point already/);
        } else {
          await importDiff(reopened, ctx, 'w', chunks(theStream));
        }
        expect((await bytesOf(reopened, 'w')).equals(want)).toBe(true);
        expect((await listSnapshots(reopened, 'w')).map((s) => s.name)).toContain(wantSnap);
        expect((await reopened.volumeInfo('w')).incomplete).toBe(false);
        expect((await reopened.check()).problems).toEqual([]);
        await reopened.close();
      }),
      { numRuns: propertyRuns(30, 10) },
    );
  });
});
