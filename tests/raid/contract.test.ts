import { describe } from 'vitest';
import { blockDeviceContract } from '../support/blockdev-contract.js';
import { label, LEVELS, memoryArray } from './helpers.js';

const SIZE = 150 * 1024 + 512;

describe('RAID arrays keep the BlockDevice contract', () => {
  for (const c of LEVELS) {
    blockDeviceContract({
      name: `${label(c)}, healthy`,
      size: SIZE,
      runs: 300,
      make: async () => {
        const { array } = await memoryArray(c, SIZE);
        return { dev: array, dispose: () => array.close() };
      },
    });
    if (c.tolerates === 0) continue;
    blockDeviceContract({
      name: `${label(c)}, degraded by ${c.tolerates}`,
      size: SIZE,
      runs: 300,
      make: async () => {
        const { array } = await memoryArray(c, SIZE);
        // Fail members spread over the array: the first, and for two the one in the middle.
        const victims = c.tolerates === 1 ? [1] : [0, Math.floor(c.members / 2)];
        for (const v of victims) await array.fail(v);
        return { dev: array, dispose: () => array.close() };
      },
    });
  }
});
