import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RequestOrder, type OrderedHold } from '../../src/nbd/request-order.js';
import { propertyRuns } from '../support/scratch.js';

interface Held extends OrderedHold {
  id: number;
  started: boolean;
  released: boolean;
}

function overlap(a: Held, b: Held): boolean {
  return a.start < b.end && b.start < a.end && a.start < a.end && b.start < b.end && (a.exclusive || b.exclusive);
}

describe('request order', () => {
  it('never runs conflicting requests together and never lets a later one overtake an earlier one it conflicts with', () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant('add' as const), start: fc.integer({ min: 0, max: 60 }), len: fc.integer({ min: 0, max: 20 }), exclusive: fc.boolean() }),
      fc.record({ kind: fc.constant('finish' as const), pick: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 80 }), (steps) => {
        const lock = new RequestOrder();
        const all: Held[] = [];
        const start = (h: Held): void => {
          expect(h.started).toBe(false);
          h.started = true;
          for (const o of all) {
            if (o === h || o.released) continue;
            // Nothing running may conflict with it, and every earlier conflicting one is done.
            if (o.started) expect(overlap(o, h), `#${h.id} started beside #${o.id}`).toBe(false);
            if (o.id < h.id && overlap(o, h)) expect.fail(`#${h.id} overtook earlier #${o.id}`);
          }
        };
        const finishRunning = (pick: number): void => {
          const running = all.filter((h) => h.started && !h.released);
          if (running.length === 0) return;
          const h = running[pick % running.length]!;
          h.released = true;
          lock.release(h);
        };
        for (const s of steps) {
          if (s.kind === 'add') {
            const h: Held = {
              id: all.length,
              start: s.start,
              end: s.start + s.len,
              exclusive: s.exclusive,
              waiting: false,
              started: false,
              released: false,
              proceed: () => start(h),
            };
            all.push(h);
            if (lock.acquire(h)) start(h);
          } else finishRunning(s.pick);
        }
        // Draining finishes everything: no request is left waiting forever.
        for (let guard = 0; guard < 1000 && all.some((h) => !h.released); guard++) finishRunning(0);
        expect(all.every((h) => h.released)).toBe(true);
        expect(lock.size).toBe(0);
      }),
      { numRuns: propertyRuns(2000) },
    );
  });

  it('lets reads of one range run together and disjoint writes run together', () => {
    const lock = new RequestOrder();
    const mk = (start: number, end: number, exclusive: boolean): OrderedHold => ({ start, end, exclusive, waiting: false, proceed: () => undefined });
    expect(lock.acquire(mk(0, 100, false))).toBe(true);
    expect(lock.acquire(mk(50, 150, false))).toBe(true);
    expect(lock.acquire(mk(200, 300, true))).toBe(true);
    expect(lock.acquire(mk(300, 400, true))).toBe(true);
    expect(lock.acquire(mk(90, 210, true))).toBe(false);
  });
});
