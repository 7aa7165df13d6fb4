import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BufferBudget, type BudgetAccount } from '../../src/nbd/buffer-budget.js';
import { BufferPool, FIRST_SLAB_BYTES, HEADROOM, SLAB_BYTES } from '../../src/nbd/buffer-pool.js';
import { propertyRuns } from '../support/scratch.js';

const KIB = 1024;

type Op = { kind: 'charge' | 'release'; who: number; n: number } | { kind: 'close'; who: number };

describe('the server-wide buffer budget', () => {
  it('never lets the connections together hold more than the total, nor one more than its bound, and always grants a floor', () => {
    const slots = 6;
    const total = 96 * KIB;
    const floor = 8 * KIB;
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ kind: fc.constant('charge' as const), who: fc.integer({ min: 0, max: slots - 1 }), n: fc.integer({ min: 1, max: 40 * KIB }) }),
      fc.record({ kind: fc.constant('release' as const), who: fc.integer({ min: 0, max: slots - 1 }), n: fc.integer({ min: 1, max: 40 * KIB }) }),
      fc.record({ kind: fc.constant('close' as const), who: fc.integer({ min: 0, max: slots - 1 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const budget = new BufferBudget({ total, perConnection: 64 * KIB, slots, floor });
        const woken = new Set<number>();
        const open = (i: number): BudgetAccount => budget.open(() => woken.add(i));
        const accounts = Array.from({ length: slots }, (_, i) => open(i));
        // The plain model: what each connection holds.
        const held = new Array<number>(slots).fill(0);
        for (const o of ops) {
          const a = accounts[o.who]!;
          if (o.kind === 'close') {
            a.close();
            accounts[o.who] = open(o.who);
            held[o.who] = 0;
          } else if (o.kind === 'release') {
            a.release(o.n);
            held[o.who] = Math.max(0, held[o.who]! - o.n);
          } else {
            const before = held[o.who]!;
            const ok = a.tryCharge(o.n);
            // Within its own floor a connection is never refused, whatever the others hold.
            if (before + o.n <= floor) expect(ok).toBe(true);
            if (ok) {
              held[o.who] = before + o.n;
              // Over its bound only with a single request on an otherwise empty connection.
              if (before > 0) expect(held[o.who]).toBeLessThanOrEqual(budget.perConnection);
            }
          }
          const sum = held.reduce((s, h) => s + h, 0);
          expect(budget.stats.used).toBe(sum);
          expect(sum).toBeLessThanOrEqual(total);
          accounts.forEach((acc, i) => expect(acc.bytes).toBe(held[i]));
        }
        // Once everyone lets go, the first in line is told and then fits.
        const waiting = budget.stats.waiting;
        accounts.forEach((acc) => acc.release(acc.bytes));
        if (waiting > 0) expect(woken.size).toBeGreaterThan(0);
        expect(budget.stats.used).toBe(0);
      }),
      { numRuns: propertyRuns(300, 60) },
    );
  });

  it('serves the shared part first come, first served: a large request is not starved by small ones', () => {
    const budget = new BufferBudget({ total: 64 * KIB, perConnection: 64 * KIB, slots: 2, floor: 4 * KIB });
    const shared = budget.stats.shared;
    const hog = budget.open(() => undefined);
    let bigTold = 0;
    const big = budget.open(() => bigTold++);
    expect(hog.tryCharge(4 * KIB + shared)).toBe(true);
    expect(big.tryCharge(4 * KIB + shared / 2)).toBe(false);
    hog.release(shared / 4);
    expect(bigTold).toBe(1);
    // Room for a small request now, but the large one asked first.
    expect(hog.tryCharge(shared / 8)).toBe(false);
    hog.release(shared);
    expect(big.tryCharge(4 * KIB + shared / 2)).toBe(true);
    expect(hog.tryCharge(shared / 8)).toBe(true);
  });
});

describe('pooled I/O buffers', () => {
  const MIB = 1024 * 1024;
  /** Memory of a slab meant for `bytes` of blocks of `size`: each block has its headroom in front. */
  const slab = (bytes: number, size: number) => (bytes / size) * (size + HEADROOM);

  it('reuse buffers, and drop every slab once all its buffers are back and trim() is asked', () => {
    let released = 0;
    const pool = new BufferPool(() => released++);
    const a = pool.take(1024 * 1024);
    const b = pool.take(1000);
    expect(a.length).toBe(1024 * 1024);
    expect(b.length).toBe(4096);
    expect(pool.stats).toEqual({ slabs: 2, slabBytes: slab(FIRST_SLAB_BYTES, 1024 * 1024) + slab(FIRST_SLAB_BYTES, 4096), inUseBytes: 1024 * 1024 + 4096 });
    pool.give(a);
    expect(pool.take(600 * 1024)).toBe(a);
    pool.give(a);
    pool.give(a);
    pool.give(Buffer.alloc(4096));
    expect(pool.stats.inUseBytes).toBe(4096);
    pool.trim();
    expect(pool.stats).toEqual({ slabs: 1, slabBytes: slab(FIRST_SLAB_BYTES, 4096), inUseBytes: 4096 });
    expect(released).toBe(1);
    pool.give(b);
    pool.trim();
    expect(pool.stats).toEqual({ slabs: 0, slabBytes: 0, inUseBytes: 0 });
    expect(released).toBe(2);
  });

  it('grow a class by slabs of twice the last one, up to SLAB_BYTES, and keep at most one empty slab per class while in use', () => {
    const pool = new BufferPool();
    const sizes: number[] = [];
    for (let bytes = FIRST_SLAB_BYTES; sizes.length < 2 || sizes[sizes.length - 2] !== SLAB_BYTES; bytes = Math.min(SLAB_BYTES, bytes * 2)) sizes.push(bytes);
    const total = sizes.reduce((a, b) => a + b, 0);
    const blocks = total / (1024 * 1024);
    const taken = Array.from({ length: blocks }, () => pool.take(1024 * 1024));
    expect(pool.stats).toEqual({ slabs: sizes.length, slabBytes: slab(total, 1024 * 1024), inUseBytes: blocks * 1024 * 1024 });
    for (const t of taken) pool.give(t);
    expect(pool.stats.slabs).toBe(1);
    expect(pool.stats.inUseBytes).toBe(0);
  });

  it('keep the larger empty slab as the spare, so a class that outgrew its first slab does not make and drop another at every peak', () => {
    let released = 0;
    const pool = new BufferPool(() => released++);
    const perFirst = FIRST_SLAB_BYTES / MIB;
    const peak = () => Array.from({ length: perFirst + 1 }, () => pool.take(MIB));
    for (let round = 0; round < 3; round++) {
      const taken = peak();
      expect(pool.stats.slabs).toBe(round === 0 ? 2 : 1);
      for (const t of taken) pool.give(t);
      expect(pool.stats).toEqual({ slabs: 1, slabBytes: slab(2 * FIRST_SLAB_BYTES, MIB), inUseBytes: 0 });
    }
    expect(released).toBe(1);
  });

  it('keep room in front of every buffer for a reply header, so header and data are one buffer', () => {
    const pool = new BufferPool();
    const a = pool.take(4096);
    const b = pool.take(4096);
    a.fill(0xaa);
    b.fill(0xbb);
    const whole = pool.withFront(b.subarray(0, 100), 16);
    expect(whole.length).toBe(116);
    whole.fill(0x11, 0, 16);
    // The header's bytes are the block's own: neither its neighbour nor its data was touched.
    expect(a.every((x) => x === 0xaa)).toBe(true);
    expect(whole.subarray(16).equals(b.subarray(0, 100))).toBe(true);
    expect(b.every((x) => x === 0xbb)).toBe(true);
    expect(() => pool.withFront(b.subarray(1), 16)).toThrow(RangeError);
    expect(() => pool.withFront(Buffer.alloc(4096), 16)).toThrow(RangeError);
    expect(() => pool.withFront(b, HEADROOM + 1)).toThrow(RangeError);
  });
});
