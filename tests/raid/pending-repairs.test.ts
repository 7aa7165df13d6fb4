import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePendingRepairs } from '../../src/raid/index.js';
import { PendingRepairs } from '../../src/raid/pending-repairs.js';
import { propertyRuns } from '../support/scratch.js';

const BLOCK = 4096;
const MiB = 1024 * 1024;

describe('pending repairs', () => {
  it('merge touching ranges up to 1 MiB and cover exactly the blocks recorded, with their members (against a per-block model)', () => {
    const add = fc.record({ block: fc.integer({ min: 0, max: 1023 }), blocks: fc.integer({ min: 1, max: 48 }), members: fc.uniqueArray(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 2 }) });
    fc.assert(
      fc.property(fc.array(add, { maxLength: 60 }), (adds) => {
        const p = new PendingRepairs();
        const model = new Map<number, Set<number>>();
        for (const a of adds) {
          p.add({ offset: a.block * BLOCK, length: a.blocks * BLOCK, members: a.members });
          for (let b = a.block; b < a.block + a.blocks; b++) {
            const set = model.get(b) ?? new Set<number>();
            for (const m of a.members) set.add(m);
            model.set(b, set);
          }
        }
        const list = p.list();
        expect(p.size).toBe(list.length);
        const covered = new Set<number>();
        let end = -1;
        for (const r of list) {
          expect(r.offset).toBeGreaterThan(end);
          end = r.offset + r.length - 1;
          expect(r.length).toBeLessThanOrEqual(Math.max(MiB, 48 * BLOCK));
          for (let b = r.offset / BLOCK; b < (r.offset + r.length) / BLOCK; b++) {
            covered.add(b);
            for (const m of model.get(b) ?? []) expect(r.members).toContain(m);
          }
        }
        expect([...covered].sort((x, y) => x - y)).toEqual([...model.keys()].sort((x, y) => x - y));
      }),
      { numRuns: propertyRuns(200) },
    );
  });

  it('a stored list is checked before it is trusted', () => {
    const size = 8 * MiB;
    expect(parsePendingRepairs([{ offset: 4096, length: 4096, members: [1] }], size, 4)).toEqual([{ offset: 4096, length: 4096, members: [1] }]);
    expect(() => parsePendingRepairs({}, size, 4)).toThrow(/not a list/);
    expect(() => parsePendingRepairs([{ offset: size, length: 4096, members: [1] }], size, 4)).toThrow(/entry 0/);
    expect(() => parsePendingRepairs([{ offset: 0, length: 4096, members: [4] }], size, 4)).toThrow(/entry 0/);
    expect(() => parsePendingRepairs([null], size, 4)).toThrow(/entry 0/);
  });
});
