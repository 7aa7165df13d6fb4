import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OffsetHeap } from '../../src/image/offset-heap.js';
import { propertyRuns } from '../support/scratch.js';

describe('the heap of pending reads', () => {
  it('hands rows back by offset, whole, however pushes and pops interleave (against a sorted list)', () => {
    const op = fc.oneof(fc.record({ push: fc.tuple(fc.integer({ min: 0, max: 2 ** 40 }), fc.double({ noNaN: true }), fc.nat()) }), fc.constant({ pop: true as const }));
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const heap = new OffsetHeap(['a', 'b'] as const);
        const model: { at: number; a: number; b: number }[] = [];
        for (const o of ops) {
          if ('push' in o) {
            const [at, a, b] = o.push;
            heap.push({ at, a, b });
            model.push({ at, a, b });
            continue;
          }
          const min = model.reduce((m, r) => Math.min(m, r.at), Infinity);
          expect(heap.peek()?.at).toBe(model.length ? min : undefined);
          const got = heap.pop();
          if (got === undefined) {
            expect(model).toEqual([]);
            continue;
          }
          // Rows of equal offset may come in any order; the one given back must be one of them, unchanged.
          const i = model.findIndex((r) => r.at === got.at && Object.is(r.a, got.a) && r.b === got.b);
          expect(got.at).toBe(min);
          expect(i).toBeGreaterThanOrEqual(0);
          model.splice(i, 1);
        }
        expect(heap.size).toBe(model.length);
      }),
      { numRuns: propertyRuns(300, 100) },
    );
  });
});
