import { describe, expect, it } from 'vitest';
import { RaidError } from '../../src/raid/index.js';
import { LEVELS, memoryArray } from './helpers.js';

describe('naming a member', () => {
  it('takes a role number, the device UUID of its superblock (or a unique prefix), or its device name', async () => {
    const { array } = await memoryArray(LEVELS.find((c) => c.level === 6)!, 64 * 1024);
    try {
      const members = array.status().members;
      for (const m of members) {
        expect(array.roleOf(m.uuid)).toBe(m.role);
        expect(array.roleOf(m.uuid.slice(0, 12).toUpperCase())).toBe(m.role);
        expect(array.roleOf(m.device)).toBe(m.role);
        expect(array.roleOf(String(m.role))).toBe(m.role);
      }
      const target = members[2]!;
      await array.fail(target.uuid);
      expect(array.status().members[2]!.state).toBe('faulty');
      await array.remove(target.uuid.slice(0, 8));
      expect(array.status().members[2]!.state).toBe('missing');
      const err = (() => {
        try {
          array.roleOf('ffffffffffff');
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(RaidError);
      expect((err as RaidError).message).toContain("'ffffffffffff' is not an active member");
    } finally {
      await array.close();
    }
  });
});
