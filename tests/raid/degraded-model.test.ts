import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FaultyDevice, MemoryDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { MirrorLayout } from '../../src/raid/levels/index.js';
import type { RaidArray } from '../../src/raid/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';
import { CHUNK, label, LEVELS, memberSize, memoryArray, type LevelCase } from './helpers.js';

const SIZE = 96 * 1024;

type Op =
  | { op: 'write'; offset: number; length: number; seed: number }
  | { op: 'zero'; offset: number; length: number }
  | { op: 'read'; offset: number; length: number }
  | { op: 'adminFail'; member: number }
  | { op: 'ioError'; member: number }
  | { op: 'replace'; member: number }
  | { op: 'finishRebuild' }
  | { op: 'flush' };

const span = fc.integer({ min: 0, max: SIZE - 1 }).chain((offset) => fc.record({ offset: fc.constant(offset), length: fc.integer({ min: 1, max: Math.min(20_000, SIZE - offset) }) }));

function ops(members: number): fc.Arbitrary<Op[]> {
  const member = fc.integer({ min: 0, max: members - 1 });
  return fc.array(
    fc.oneof(
      { weight: 6, arbitrary: fc.record({ s: span, seed: fc.integer() }).map(({ s, seed }) => ({ op: 'write' as const, ...s, seed })) },
      { weight: 1, arbitrary: span.map((s) => ({ op: 'zero' as const, ...s })) },
      { weight: 4, arbitrary: span.map((s) => ({ op: 'read' as const, ...s })) },
      { weight: 1, arbitrary: member.map((m) => ({ op: 'adminFail' as const, member: m })) },
      { weight: 1, arbitrary: member.map((m) => ({ op: 'ioError' as const, member: m })) },
      { weight: 2, arbitrary: member.map((m) => ({ op: 'replace' as const, member: m })) },
      { weight: 1, arbitrary: fc.constant({ op: 'finishRebuild' as const }) },
      { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
    ),
    { minLength: 5, maxLength: 40 },
  );
}

/** Whether the array still holds every byte with these roles down (rebuilding ones count as down). */
function survives(c: LevelCase, down: boolean[]): boolean {
  if (c.level === 5 || c.level === 6) return down.filter(Boolean).length <= c.tolerates;
  const k = c.level === 0 ? 1 : c.level === 1 ? c.members : c.copies!;
  return new MirrorLayout(c.members, k, CHUNK, 1).survives(down);
}

async function run(c: LevelCase, list: Op[]): Promise<void> {
  const faulty: FaultyDevice[] = [];
  const wrap = (dev: MemoryDevice): BlockDevice => {
    const f = new FaultyDevice(dev);
    faulty.push(f);
    return f;
  };
  const { array } = await memoryArray(c, SIZE, { wrap });
  const model = new Uint8Array(SIZE);
  let rebuild: Promise<void> | undefined;
  // Members told to fail every request, whether or not the array has noticed yet.
  const broken = new Set<string>();
  const hot = new Set<number>();
  const down = (a: RaidArray): boolean[] => a.status().members.map((m) => m.state !== 'active' || broken.has(m.device));
  try {
    for (const o of list) {
      switch (o.op) {
        case 'write': {
          const data = pattern(o.length, o.seed);
          await array.write(data, o.offset);
          model.set(data, o.offset);
          break;
        }
        case 'zero':
          await array.writeZeroes(o.offset, o.length);
          model.fill(0, o.offset, o.offset + o.length);
          break;
        case 'read': {
          const buf = Buffer.alloc(o.length);
          await array.read(buf, o.offset);
          expect(Buffer.compare(buf, model.subarray(o.offset, o.offset + o.length)), `read ${o.offset}+${o.length}`).toBe(0);
          break;
        }
        case 'adminFail': {
          const d = down(array);
          if (d[o.member]) break;
          d[o.member] = true;
          // The array's own view: a role being hot-replaced still serves from the old device.
          const known = array.status().members.map((m, i) => i === o.member || (m.state !== 'active' && !(m.state === 'rebuilding' && hot.has(i))));
          if (survives(c, d)) await array.fail(o.member);
          else if (!survives(c, known)) await expect(array.fail(o.member)).rejects.toThrow(/would lose data/);
          break;
        }
        case 'ioError': {
          // The member starts failing every request; the array must notice on its own.
          const d = down(array);
          const st = array.status().members[o.member]!;
          if (st.state !== 'active' && st.state !== 'rebuilding') break;
          d[o.member] = true;
          if (!survives(c, d)) break;
          const dev = faulty.find((f) => f.name === st.device);
          dev?.addRule({});
          broken.add(st.device);
          break;
        }
        case 'replace': {
          // Faulty or missing: a plain rebuild. Active: a hot replace, the old device serving until passed.
          const st = array.status().members[o.member]!;
          if (st.state === 'rebuilding') break;
          if (st.state === 'active') hot.add(o.member);
          else hot.delete(o.member);
          await array.replace(o.member, wrap(new MemoryDevice({ size: memberSize(c, SIZE), name: `new${faulty.length}` })));
          rebuild = array.rebuild({ stepRows: 2 });
          break;
        }
        case 'finishRebuild':
          await rebuild;
          break;
        case 'flush':
          await array.flush();
          break;
      }
    }
    await rebuild;
    const all = Buffer.alloc(SIZE);
    await array.read(all, 0);
    expect(Buffer.compare(all, model), 'whole array matches the model').toBe(0);
  } finally {
    await rebuild?.catch(() => undefined);
    await array.close().catch(() => undefined);
  }
}

describe('RAID arrays against a byte-array model while members fail and are rebuilt', () => {
  for (const c of LEVELS.filter((l) => l.tolerates > 0)) {
    it(`${label(c)}: reads stay correct through failures, I/O errors and rebuilds`, async () => {
      await fc.assert(
        fc.asyncProperty(ops(c.members), (list) => run(c, list)),
        { numRuns: propertyRuns(400) },
      );
    }, 120_000);
  }
});
