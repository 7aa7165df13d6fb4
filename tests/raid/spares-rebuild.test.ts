import { describe, expect, it } from 'vitest';
import { FaultyDevice, MemoryDevice } from '../../src/blockdev/index.js';
import { createArray } from '../../src/raid/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { CHUNK, memberSize, type LevelCase } from './helpers.js';

const SIZE = 192 * 1024;

describe('hot spares and online rebuild', () => {
  it('a hot spare takes over a member that starts failing and is rebuilt while writes go on', async () => {
    const c: LevelCase = { level: 5, members: 4, tolerates: 1 };
    const ms = memberSize(c, SIZE);
    const members = Array.from({ length: 4 }, (_, i) => new FaultyDevice(new MemoryDevice({ size: ms, name: `m${i}` })));
    const events: string[] = [];
    const array = await createArray({ level: 5, members, spares: [new MemoryDevice({ size: ms, name: 'spare' })], chunk: CHUNK, size: SIZE, autoRebuild: true, onEvent: (e) => events.push(e) });
    const model = pattern(SIZE, 1);
    await array.write(model, 0);
    members[2]!.addRule({});
    // The next requests hit the failing member: the array fails it and the spare steps in.
    for (let i = 0; i < 20; i++) {
      const data = pattern(5000, 100 + i);
      const at = (i * 9173) % (SIZE - 5000);
      await array.write(data, at);
      model.set(data, at);
    }
    const back = Buffer.alloc(SIZE);
    await array.read(back, 0);
    expect(Buffer.compare(back, model)).toBe(0);
    await array.rebuild();
    const st = array.status();
    expect(st.state).toBe('optimal');
    expect(st.members[2]!.device).toBe('spare');
    expect(st.spares).toEqual([]);
    expect(events.some((e) => /member 2 \(faulty\(m2\)\) failed/.test(e))).toBe(true);
    expect(events.some((e) => /spare takes member role 2/.test(e))).toBe(true);
    // The rebuilt spare carries the data: lose another member and read everything.
    await array.fail(0);
    await array.read(back, 0);
    expect(Buffer.compare(back, model)).toBe(0);
    await array.close();
  });

  it('a rate-limited rebuild takes at least as long as the rate allows', async () => {
    const c: LevelCase = { level: 1, members: 2, tolerates: 1 };
    const ms = memberSize(c, SIZE);
    const array = await createArray({ level: 1, members: [new MemoryDevice({ size: ms }), new MemoryDevice({ size: ms })], chunk: CHUNK, size: SIZE });
    await array.write(pattern(SIZE, 3), 0);
    await array.fail(1);
    await array.replace(1, new MemoryDevice({ size: ms }));
    const rate = 1024 * 1024;
    const started = performance.now();
    const fractions: number[] = [];
    await array.rebuild({ rate, stepRows: 4, onProgress: (p) => fractions.push(p.fraction) });
    // A lower bound only: a slow machine cannot make this fail.
    expect(performance.now() - started).toBeGreaterThanOrEqual(((SIZE / rate) * 1000) * 0.9);
    expect(fractions.at(-1)).toBe(1);
    expect(fractions.length).toBeGreaterThan(5);
    await array.close();
  });

  for (const level of [1, 5] as const) {
    it(`RAID ${level}: a hot replace keeps redundancy: another member can fail while the new one fills`, async () => {
      const c: LevelCase = level === 1 ? { level: 1, members: 2, tolerates: 1 } : { level: 5, members: 4, tolerates: 1 };
      const ms = memberSize(c, SIZE);
      const old = new MemoryDevice({ size: ms, name: 'old' });
      const members = [old, ...Array.from({ length: c.members - 1 }, (_, i) => new MemoryDevice({ size: ms, name: `m${i + 1}` }))];
      const array = await createArray({ level, members, chunk: CHUNK, size: SIZE });
      const model = pattern(SIZE, 21);
      await array.write(model, 0);
      await array.replace('old', new MemoryDevice({ size: ms, name: 'new' }));
      let failedMidway = false;
      const rebuilding = array.rebuild({
        stepRows: 1,
        onProgress: (p) => {
          if (!failedMidway && p.fraction >= 0.3) {
            failedMidway = true;
            // Without the old device serving its rows this would be a second loss.
            void array.fail(1);
          }
        },
      });
      const back = Buffer.alloc(SIZE);
      while (!failedMidway) await new Promise((r) => setImmediate(r));
      const data = pattern(7000, 22);
      await array.write(data, 50_000);
      model.set(data, 50_000);
      await array.read(back, 0);
      expect(Buffer.compare(back, model), 'reads mid-replace with another member failed').toBe(0);
      await rebuilding;
      const st = array.status();
      expect(st.members[0]!.device).toBe('new');
      expect(st.members[0]!.state).toBe('active');
      expect(st.members[1]!.state).toBe('faulty');
      await array.read(back, 0);
      expect(Buffer.compare(back, model)).toBe(0);
      await array.close();
    });
  }
});
