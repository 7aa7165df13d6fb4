import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockDeviceError, walkExtents, type Extent, type Walkable } from '../../src/blockdev/index.js';

/** A device whose map is `runs` (lengths with flags), answering at most `perAnswer` extents a call, as a volume or an NBD server may. */
function fragmented(runs: Array<{ length: number; hole: boolean }>, perAnswer: number): Walkable {
  const extents: Extent[] = [];
  let at = 0;
  for (const r of runs) {
    extents.push({ offset: at, length: r.length, hole: r.hole, zero: r.hole });
    at += r.length;
  }
  return {
    name: 'fragmented',
    size: at,
    blockStatus: async (offset, length) => {
      const out: Extent[] = [];
      for (const e of extents) {
        if (e.offset + e.length <= offset || e.offset >= offset + length) continue;
        const start = Math.max(e.offset, offset);
        out.push({ ...e, offset: start, length: Math.min(e.offset + e.length, offset + length) - start });
        if (out.length === perAnswer) break;
      }
      return out;
    },
  };
}

const runsArb = fc.array(fc.record({ length: fc.integer({ min: 1, max: 5000 }), hole: fc.boolean() }), { minLength: 1, maxLength: 60 });

describe('walkExtents', () => {
  it('covers the whole range with merged extents, however little each answer covers', async () => {
    await fc.assert(
      fc.asyncProperty(runsArb, fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 9000 }), async (runs, perAnswer, span) => {
        const dev = fragmented(runs, perAnswer);
        // The model: one byte-flag per byte, merged into runs.
        const flags = runs.flatMap((r) => Array<boolean>(r.length).fill(r.hole));
        const want: Extent[] = [];
        flags.forEach((hole, i) => {
          const last = want.at(-1);
          if (last && last.hole === hole) last.length++;
          else want.push({ offset: i, length: 1, hole, zero: hole });
        });
        const got: Extent[] = [];
        for await (const e of walkExtents(dev, 0, dev.size, span)) got.push(e);
        expect(got).toEqual(want);
      }),
      { numRuns: 200 },
    );
  });

  it('walks a sub-range and treats a device without block status as data', async () => {
    const got: Extent[] = [];
    for await (const e of walkExtents({ name: 'plain', size: 100 }, 10, 90)) got.push(e);
    expect(got).toEqual([{ offset: 10, length: 80, hole: false, zero: false }]);
  });

  it('rejects an answer that skips bytes, or none at all', async () => {
    const gap: Walkable = { name: 'gap', size: 100, blockStatus: async (o) => [{ offset: o + 1, length: 10, hole: false, zero: false }] };
    const none: Walkable = { name: 'none', size: 100, blockStatus: async () => [] };
    const drain = async (d: Walkable): Promise<void> => {
      for await (const _ of walkExtents(d)) void _;
    };
    await expect(drain(gap)).rejects.toBeInstanceOf(BlockDeviceError);
    await expect(drain(none)).rejects.toThrow(/no answer/);
  });
});
