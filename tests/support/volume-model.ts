import fc from 'fast-check';
import { expect } from 'vitest';
import type { BlockDevice } from '../../src/blockdev/index.js';
import { Pool, type Volume } from '../../src/qcowlike/index.js';
import { pattern } from './blockdev-contract.js';
import { reopenable } from './pool.js';

/**
 * The volume model property: random writes, reads, zeroes, discards,
 * resizes, flushes and reopens of one volume, checked against a plain byte
 * array, and a clean check at the end. Any device of 24 MiB or more carries it
 * (memory in tests/qcowlike/volume-model.test.ts, RADOS in rados-volume-model).
 */

export type VolumeOp =
  | { op: 'write'; at: number; len: number; seed: number; fua: boolean }
  | { op: 'read'; at: number; len: number }
  | { op: 'zero'; at: number; len: number; unmap: boolean }
  | { op: 'discard'; at: number; len: number }
  | { op: 'flush' }
  | { op: 'reopen' }
  | { op: 'grow'; by: number }
  | { op: 'shrink'; by: number };

/** Offsets and lengths as fractions, so they stay valid while the volume grows and shrinks. */
const frac = fc.double({ min: 0, max: 1, noNaN: true });
export const volumeOpArb: fc.Arbitrary<VolumeOp> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ at: frac, len: fc.integer({ min: 1, max: 200_000 }), seed: fc.integer(), fua: fc.boolean() }).map((r) => ({ op: 'write' as const, ...r, at: r.at })) },
  { weight: 3, arbitrary: fc.record({ at: frac, len: fc.integer({ min: 1, max: 200_000 }) }).map((r) => ({ op: 'read' as const, ...r })) },
  { weight: 2, arbitrary: fc.record({ at: frac, len: fc.integer({ min: 1, max: 300_000 }), unmap: fc.boolean() }).map((r) => ({ op: 'zero' as const, ...r })) },
  { weight: 2, arbitrary: fc.record({ at: frac, len: fc.integer({ min: 1, max: 300_000 }) }).map((r) => ({ op: 'discard' as const, ...r })) },
  { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 400 }).map((k) => ({ op: 'grow' as const, by: k * 512 })) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 100 }).map((k) => ({ op: 'shrink' as const, by: k * 512 })) },
) as fc.Arbitrary<VolumeOp>;

/** Runs `ops` on a new pool on `dev` (reopened on the same device). */
export async function runVolumeModel(dev: BlockDevice, clusterSize: number, ops: VolumeOp[]): Promise<void> {
  const opts = { cacheBytes: 6 * clusterSize, journalBytes: 128 * 1024 };
  let pool = await Pool.create(reopenable(dev), { clusterSize, ...opts });
  let size = 512 * 1024;
  await pool.createVolume('v', size);
  let vol: Volume = await pool.openVolume('v');
  let model = new Uint8Array(size);
  const span = (f: number, len: number): [number, number] => {
    const at = Math.min(size - 1, Math.floor(f * size));
    return [at, Math.min(len, size - at)];
  };
  for (const o of ops) {
    switch (o.op) {
      case 'write': {
        const [at, len] = span(o.at, o.len);
        const data = pattern(len, o.seed);
        await vol.write(data, at, { fua: o.fua });
        model.set(data, at);
        break;
      }
      case 'read': {
        const [at, len] = span(o.at, o.len);
        const buf = Buffer.alloc(len);
        await vol.read(buf, at);
        expect(Buffer.compare(buf, model.subarray(at, at + len)), `read ${at}+${len}`).toBe(0);
        break;
      }
      case 'zero':
      case 'discard': {
        const [at, len] = span(o.at, o.len);
        if (o.op === 'zero') await vol.writeZeroes(at, len, { mayUnmap: o.unmap });
        else await vol.discard(at, len);
        model.fill(0, at, at + len);
        break;
      }
      case 'flush':
        await vol.flush();
        break;
      case 'reopen':
        await vol.close();
        await pool.close();
        pool = await Pool.open(reopenable(dev), opts);
        vol = await pool.openVolume('v');
        break;
      case 'grow':
      case 'shrink': {
        const next = o.op === 'grow' ? size + o.by : Math.max(512, size - o.by);
        await pool.resizeVolume('v', next, { force: true });
        const m = new Uint8Array(next);
        m.set(model.subarray(0, Math.min(size, next)));
        model = m;
        size = next;
        expect(vol.size).toBe(size);
        break;
      }
    }
  }
  const all = Buffer.alloc(size);
  await vol.read(all, 0);
  expect(Buffer.compare(all, model), 'whole volume').toBe(0);
  await vol.close();
  const report = await pool.check();
  expect(report.problems).toEqual([]);
  await pool.close();
}
