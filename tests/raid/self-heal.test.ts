import xxhash from 'xxhash-wasm';
import { describe, expect, it } from 'vitest';
import { BlockDeviceError, MemoryDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { DATA_OFFSET, type RaidArray } from '../../src/raid/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { CHUNK, label, LEVELS, memoryArray } from './helpers.js';

const SIZE = 128 * 1024;
/** The checksum unit of the reader standing in for the pool: 4 KiB clusters. */
const CLUSTER = 4096;
const { h64Raw } = await xxhash();

/** Flips bytes in part of a member's data area, as silent media corruption would. */
function corrupt(member: MemoryDevice, from: number, length: number): void {
  const b = Buffer.alloc(length);
  member.readSync(b, DATA_OFFSET + from);
  for (let i = 0; i < length; i += 7) b[i]! ^= 0x5a;
  member.writeSync(b, DATA_OFFSET + from);
}

/**
 * What the pool does with per-cluster checksums: read, verify, and on a
 * mismatch try the array's other copies, return the one that verifies and
 * have the array repair the bad member(s).
 */
async function checkedRead(array: RaidArray, offset: number, sums: bigint[]): Promise<{ data: Buffer; healed: boolean }> {
  const buf = Buffer.alloc(CLUSTER);
  const want = sums[offset / CLUSTER]!;
  await array.read(buf, offset);
  if (h64Raw(buf) === want) return { data: buf, healed: false };
  const r = array.redundancy!;
  for (let copy = 1; copy < r.copies(offset, CLUSTER); copy++) {
    try {
      await r.readCopy(buf, offset, copy);
    } catch {
      continue;
    }
    if (h64Raw(buf) === want) {
      expect(await r.repair(buf, offset)).toBeGreaterThan(0);
      return { data: buf, healed: true };
    }
  }
  throw new Error(`no copy of cluster at ${offset} verifies`);
}

async function image(dev: BlockDevice, from = 0): Promise<Buffer> {
  const b = Buffer.alloc(dev.size - from);
  await dev.read(b, from);
  return b;
}

/** The pool's checksummed scrub: verify every copy of every cluster, repair from one that verifies. */
async function verifyAllCopies(array: RaidArray, sums: bigint[]): Promise<number> {
  const r = array.redundancy!;
  const buf = Buffer.alloc(CLUSTER);
  const good = Buffer.alloc(CLUSTER);
  let repaired = 0;
  for (let o = 0; o < array.size; o += CLUSTER) {
    let bad = false;
    let found = false;
    for (let copy = 0; copy < r.copies(o, CLUSTER); copy++) {
      await r.readCopy(buf, o, copy);
      if (h64Raw(buf) === sums[o / CLUSTER]) {
        if (!found) buf.copy(good);
        found = true;
      } else bad = true;
    }
    expect(found, `some copy of cluster ${o} verifies`).toBe(true);
    if (bad) repaired += await r.repair(good, o);
  }
  return repaired;
}

describe('silent corruption on one member', () => {
  for (const c of LEVELS.filter((l) => l.tolerates > 0)) {
    it(`${label(c)}: checksummed reads return good data and repair the member, counted in status`, async () => {
      const { array, members } = await memoryArray(c, SIZE);
      const data = pattern(SIZE, 1234);
      await array.write(data, 0);
      const sums: bigint[] = [];
      for (let o = 0; o < SIZE; o += CLUSTER) sums.push(h64Raw(data.subarray(o, o + CLUSTER)));
      const victim = members[1] as MemoryDevice;
      const before = await image(victim, DATA_OFFSET);
      corrupt(victim, CHUNK / 2, 5 * CHUNK);
      let healed = 0;
      for (let o = 0; o < SIZE; o += CLUSTER) {
        const r = await checkedRead(array, o, sums);
        expect(Buffer.compare(r.data, data.subarray(o, o + CLUSTER)), `cluster at ${o}`).toBe(0);
        if (r.healed) healed++;
      }
      // Mirrors may have served every cluster from a good replica; the checksummed scrub reaches the rest.
      const scrubbed = await verifyAllCopies(array, sums);
      expect(healed + scrubbed).toBeGreaterThan(0);
      if (c.level === 5 || c.level === 6) expect(healed).toBeGreaterThan(0);
      expect(Buffer.compare(await image(victim, DATA_OFFSET), before), 'the corrupted member was rewritten').toBe(0);
      expect(await verifyAllCopies(array, sums)).toBe(0);
      expect(array.status().counters.repairs).toBeGreaterThanOrEqual(1);
      expect((await array.scrub()).mismatches).toEqual([]);
      // A second pass finds nothing left to heal.
      for (let o = 0; o < SIZE; o += CLUSTER) expect((await checkedRead(array, o, sums)).healed).toBe(false);
      await array.close();
    });

    it(`${label(c)}: scrub finds the mismatch and repair makes the copies agree`, async () => {
      const { array, members } = await memoryArray(c, SIZE);
      const data = pattern(SIZE, 77);
      await array.write(data, 0);
      corrupt(members[2] as MemoryDevice, 3 * CHUNK, 100);
      const found = await array.scrub();
      expect(found.mismatches.length).toBeGreaterThan(0);
      if (c.level === 6) expect(found.mismatches.flatMap((m) => m.members)).toEqual([2]);
      // Three copies outvote the bad one; with two the array cannot tell which is right.
      if (c.members === 3 || c.copies === 3) expect(new Set(found.mismatches.flatMap((m) => m.members))).toEqual(new Set([2]));
      expect(array.status().counters.mismatches).toBe(found.mismatches.length);
      const fixed = await array.scrub({ repair: true });
      expect(fixed.mismatches.length).toBe(found.mismatches.length);
      expect((await array.scrub()).mismatches).toEqual([]);
      await array.close();
    });
  }

  it('RAID 6 scrub finds which data block is wrong from P and Q, and puts the right data back', async () => {
    const c = LEVELS.find((l) => l.level === 6)!;
    const { array, members } = await memoryArray(c, SIZE);
    const data = pattern(SIZE, 5);
    await array.write(data, 0);
    for (const m of [0, 3]) corrupt(members[m] as MemoryDevice, (m + 2) * CHUNK, 3000);
    const report = await array.scrub({ repair: true });
    expect(report.mismatches.map((x) => x.members[0]).sort()).toEqual([0, 3]);
    expect(Buffer.compare(await image(array), data)).toBe(0);
    await array.close();
  });

  it('readCopy offers distinct ways to read a range and refuses ones that do not exist', async () => {
    const c = LEVELS.find((l) => l.level === 5)!;
    const { array, members } = await memoryArray(c, SIZE);
    const data = pattern(SIZE, 9);
    await array.write(data, 0);
    // Stripe 0 keeps data block 0 on member 0 (left-symmetric: P on the last member).
    corrupt(members[0] as MemoryDevice, 0, CHUNK);
    const r = array.redundancy!;
    expect(r.copies(0, CLUSTER)).toBe(1 + c.members);
    const buf = Buffer.alloc(CLUSTER);
    await r.readCopy(buf, 0, 0);
    expect(Buffer.compare(buf, data.subarray(0, CLUSTER))).not.toBe(0);
    await r.readCopy(buf, 0, 1);
    expect(Buffer.compare(buf, data.subarray(0, CLUSTER)), 'copy 1 rebuilds member 0 from parity').toBe(0);
    await expect(r.readCopy(buf, 0, 99)).rejects.toThrow(/no copy 99/);
    await expect(r.readCopy(buf, SIZE - 10, 1)).rejects.toThrow(/beyond the end/);
    await array.close();
  });

  it('a copy on a member that is not in sync is refused with EIO, the others still read', async () => {
    const c = LEVELS.find((l) => l.level === 1)!;
    const { array } = await memoryArray(c, SIZE);
    const data = pattern(SIZE, 6);
    await array.write(data, 0);
    await array.fail(1);
    const r = array.redundancy!;
    const buf = Buffer.alloc(CLUSTER);
    await expect(r.readCopy(buf, 0, 1)).rejects.toSatisfy((e: unknown) => e instanceof BlockDeviceError && e.code === 'EIO');
    await r.readCopy(buf, 0, 2);
    expect(Buffer.compare(buf, data.subarray(0, CLUSTER))).toBe(0);
    await array.close();
  });
});
