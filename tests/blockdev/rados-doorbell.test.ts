import fc from 'fast-check';
import koffi from 'koffi';
import { describe, expect, it } from 'vitest';
import { Doorbell, type CompletionCalls } from '../../src/blockdev/rados/doorbell.js';

/**
 * The doorbell with the real pipe and the real fputc, and completions that
 * are malloc'd blocks standing for librados's: many share a low byte, they
 * complete in any order, and each rings some time after it completed, as
 * librados's completion thread does. Every operation must settle once, with
 * its own return value, never before it completed, and none may be left.
 */

const libc = koffi.load('libc.so.6');
const malloc = libc.func('void *malloc(size_t size)');
const free = libc.func('void free(void *ptr)');
const callbackType = koffi.proto('void strata_test_completion_cb(void *completion, void *arg)');

interface Fake {
  pointer: unknown;
  complete: boolean;
  released: boolean;
  ret: number;
}

const fakes = new Map<bigint, Fake>();
const of = (c: unknown): Fake => fakes.get(koffi.address(c))!;
const cfn = (f: (c: unknown) => unknown): CompletionCalls['completionReturn'] =>
  Object.assign(f, {
    async: () => {
      throw new Error('not called off the loop');
    },
  });
const calls: CompletionCalls = {
  completionIsComplete: cfn((c) => (of(c).complete ? 1 : 0)),
  completionReturn: cfn((c) => of(c).ret),
  completionRelease: cfn((c) => {
    const f = of(c);
    if (f.released) throw new Error('released twice');
    f.released = true;
  }),
};
const bell = new Doorbell(calls);

/** Event choices: even numbers complete the next operation in completion order, odd ones ring one that completed (chosen by the number). */
const scenario = fc.record({
  count: fc.integer({ min: 1, max: 80 }),
  order: fc.array(fc.nat(), { minLength: 80, maxLength: 80 }),
  events: fc.array(fc.nat(1000), { maxLength: 200 }),
});

describe('RADOS completion doorbell', () => {
  it('settles every operation once, with its own answer, only once complete, whatever order they complete and ring in', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ count, order, events }) => {
        const ops: Fake[] = [];
        const settled = new Map<number, number>();
        const early: number[] = [];
        let done = 0;
        for (let i = 0; i < count; i++) {
          const f: Fake = { pointer: malloc(32), complete: false, released: false, ret: 1000 + i };
          fakes.set(koffi.address(f.pointer), f);
          ops.push(f);
          bell.expect({
            completion: f.pointer,
            settle: (ret) => {
              if (!f.complete) early.push(i);
              settled.set(i, (settled.get(i) ?? 0) + 1);
              expect(ret).toBe(f.ret);
              done++;
            },
          });
        }
        // Completion order: a permutation drawn from `order`.
        const pending = ops.map((_, i) => i);
        const completing = order.slice(0, count).map((k) => pending.splice(k % pending.length, 1)[0]!);
        const unrung: number[] = [];
        let rung = 0;
        // Each ring settles one operation; the loop waits for it, so that the others are seen in the state they are in then.
        const ring = async (i: number): Promise<void> => {
          koffi.call(bell.callback, callbackType, ops[i]!.pointer, bell.stream);
          rung++;
          const deadline = Date.now() + 2000;
          while (done < rung && Date.now() < deadline) await new Promise((r) => setTimeout(r, 0));
        };
        for (const e of events) {
          if (e % 2 === 0 && completing.length > 0) {
            const i = completing.shift()!;
            ops[i]!.complete = true;
            unrung.push(i);
          } else if (unrung.length > 0) await ring(unrung.splice(e % unrung.length, 1)[0]!);
        }
        for (const i of completing) ((ops[i]!.complete = true), unrung.push(i));
        for (const i of unrung) await ring(i);
        expect(early).toEqual([]);
        expect([...settled.values()].every((n) => n === 1)).toBe(true);
        expect(settled.size).toBe(count);
        expect(ops.every((f) => f.released)).toBe(true);
        for (const f of ops) {
          fakes.delete(koffi.address(f.pointer));
          free(f.pointer);
        }
      }),
      { numRuns: 60 },
    );
  });
});
