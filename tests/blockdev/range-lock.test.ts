import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RangeLock } from '../../src/blockdev/range-lock.js';
import { propertyRuns } from '../support/scratch.js';

interface Ask {
  first: number;
  length: number;
  exclusive: boolean;
  /** Event-loop turns the holder keeps the range. */
  hold: number;
}

const ask: fc.Arbitrary<Ask> = fc.record({ first: fc.nat({ max: 40 }), length: fc.integer({ min: 1, max: 8 }), exclusive: fc.boolean(), hold: fc.nat({ max: 4 }) });
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const overlap = (a: Ask, b: Ask): boolean => a.first < b.first + b.length && b.first < a.first + a.length;
const conflict = (a: Ask, b: Ask): boolean => overlap(a, b) && (a.exclusive || b.exclusive);

describe('range lock', () => {
  it('never lets conflicting holders overlap, grants every request, and grants conflicting ones in arrival order', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(ask, { maxLength: 30 }), async (asks) => {
        const lock = new RangeLock();
        const holding = new Set<number>();
        const grantedAt: number[] = [];
        let clock = 0;
        await Promise.all(
          asks.map((a, i) =>
            lock.with(a.first, a.first + a.length - 1, a.exclusive, async () => {
              for (const j of holding) expect(conflict(a, asks[j]!), `requests ${j} and ${i} held at once`).toBe(false);
              grantedAt[i] = clock++;
              holding.add(i);
              for (let t = 0; t < a.hold; t++) await turn();
              holding.delete(i);
            }),
          ),
        );
        expect(grantedAt.filter((g) => g !== undefined).length).toBe(asks.length);
        for (let i = 0; i < asks.length; i++)
          for (let j = i + 1; j < asks.length; j++) if (conflict(asks[i]!, asks[j]!)) expect(grantedAt[i]!).toBeLessThan(grantedAt[j]!);
      }),
      { numRuns: propertyRuns(300) },
    );
  });

  it('releases the range when the holder throws', async () => {
    const lock = new RangeLock();
    await expect(lock.with(0, 3, true, async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(typeof lock.acquire(0, 3, true)).toBe('function');
  });
});
