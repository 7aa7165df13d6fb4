import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { DATA_OFFSET } from '../../src/raid/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { CHUNK, memoryArray, type LevelCase } from './helpers.js';

const SIZE = 96 * 1024;

/** Flips bytes of one chunk on one member, as silent media corruption would. */
function corruptChunk(member: MemoryDevice, row: number): void {
  const b = Buffer.alloc(CHUNK);
  member.readSync(b, DATA_OFFSET + row * CHUNK);
  for (let i = 0; i < CHUNK; i += 97) b[i]! ^= 0x3c;
  member.writeSync(b, DATA_OFFSET + row * CHUNK);
}

/** Writes an array of `c`'s shape, fails `out`, and expects scrub to find nothing left to compare. */
async function expectNothingToCompare(c: LevelCase, out: number[], seed: number): Promise<void> {
  const { array } = await memoryArray(c, SIZE);
  await array.write(pattern(SIZE, seed), 0);
  for (const m of out) await array.fail(m);
  expect(await array.scrub()).toMatchObject({ bytesChecked: 0, bytesUnchecked: array.size, mismatches: [] });
  await array.close();
}

describe('scrub of a degraded array checks the redundancy that remains', () => {
  it('RAID 6 with one member out finds a damaged block in every stripe, whichever role the missing member had there', async () => {
    const { array, members } = await memoryArray({ level: 6, members: 5, tolerates: 2 }, SIZE);
    await array.write(pattern(SIZE, 3), 0);
    await array.fail(1);
    const clean = await array.scrub();
    expect(clean).toMatchObject({ bytesChecked: array.size, bytesUnchecked: 0, mismatches: [] });
    // Member 1 is P, Q or data in turn across stripes 0–4; member 3 holds data or parity there.
    const stripeData = 3 * CHUNK;
    for (let row = 0; row < 5; row++) corruptChunk(members[3] as MemoryDevice, row);
    const found = await array.scrub();
    expect(found.mismatches.map((m) => m.offset)).toEqual([0, 1, 2, 3, 4].map((s) => s * stripeData));
    expect(found.mismatches.every((m) => !m.repaired && m.members.length > 0)).toBe(true);
    await expect(array.scrub({ repair: true })).rejects.toThrow(/degraded.*rebuild first/);
    await array.close();
  });

  it('RAID 6 with two members out and RAID 5 with one have nothing left to compare, and say so', async () => {
    await expectNothingToCompare({ level: 6, members: 5, tolerates: 2 }, [0, 2], 4);
    await expectNothingToCompare({ level: 5, members: 4, tolerates: 1 }, [3], 5);
  });

  it('three mirrors with one out compare the two left; two with one out have nothing to compare', async () => {
    const three = await memoryArray({ level: 1, members: 3, tolerates: 2 }, SIZE);
    await three.array.write(pattern(SIZE, 6), 0);
    await three.array.fail(0);
    corruptChunk(three.members[2] as MemoryDevice, 5);
    const found = await three.array.scrub();
    expect(found.bytesUnchecked).toBe(0);
    expect(found.mismatches.map((m) => m.offset)).toEqual([5 * CHUNK]);
    await three.array.close();
    await expectNothingToCompare({ level: 1, members: 2, tolerates: 1 }, [1], 7);
  });
});
