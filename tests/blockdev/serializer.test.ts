import { describe, expect, it } from 'vitest';
import { Serializer } from '../../src/blockdev/index.js';

describe('Serializer', () => {
  it('runs tasks one at a time in call order, and a failure rejects only its own caller', async () => {
    const s = new Serializer();
    const log: string[] = [];
    let active = 0;
    const task = (name: string, fail = false) => async (): Promise<string> => {
      expect(++active).toBe(1);
      await new Promise((r) => setImmediate(r));
      log.push(name);
      active--;
      if (fail) throw new Error(name);
      return name;
    };
    const a = s.run(task('a'));
    const b = s.run(task('b', true));
    const c = s.run(task('c'));
    await expect(a).resolves.toBe('a');
    await expect(b).rejects.toThrow('b');
    await expect(c).resolves.toBe('c');
    await expect(s.idle()).resolves.toBeUndefined();
    expect(log).toEqual(['a', 'b', 'c']);
  });
});
