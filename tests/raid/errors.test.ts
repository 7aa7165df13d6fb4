import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { assembleArray, createArray, parsePendingRepairs, parseRaidLevel, RAID_LEVELS, RaidError, type RaidErrorCode } from '../../src/raid/index.js';
import { memoryArray } from './helpers.js';

async function code(p: Promise<unknown> | (() => unknown)): Promise<RaidErrorCode | string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    return err instanceof RaidError ? err.code : `not a RaidError: ${String(err)}`;
  }
  return 'no error';
}

describe('RAID errors are typed', () => {
  it('names each refusal with a code a caller can branch on', async () => {
    const mem = (): MemoryDevice => new MemoryDevice({ size: 1 << 20 });
    expect(await code(createArray({ level: 5, members: [mem(), mem()] }))).toBe('EINVAL');
    expect(await code(createArray({ level: 7 as 5, members: [mem(), mem(), mem()] }))).toBe('EINVAL');
    expect(await code(createArray({ level: 1, members: ['/nonexistent/a', '/nonexistent/a'] }))).toBe('EEXIST');
    expect(await code(assembleArray([mem()]))).toBe('ENOENT');
    expect(await code(() => parsePendingRepairs({}, 1 << 20, 3))).toBe('EFORMAT');

    const { array } = await memoryArray({ level: 5, members: 3, tolerates: 1 }, 256 * 1024);
    expect(await code(array.fail('nosuch'))).toBe('ENOENT');
    await array.fail(0);
    expect(await code(array.fail(0))).toBe('ESTATE');
    expect(await code(array.fail(1))).toBe('ESTATE');
    await array.close();
  });

  it('reads RAID levels one way, as typed or as stored', () => {
    expect(RAID_LEVELS.map(String).map(parseRaidLevel)).toEqual([...RAID_LEVELS]);
    expect(parseRaidLevel(6)).toBe(6);
    for (const bad of ['2', '-1', '1e1', '', 'raid5', 7]) expect(parseRaidLevel(bad)).toBeUndefined();
  });
});
