import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { createArray, DATA_OFFSET, type RaidLevel } from '../../src/raid/index.js';
import { pattern } from '../support/blockdev-contract.js';

const MEMBER = 24 << 20;

/** Where a byte pattern sits in a member's data area, or -1. */
function locate(member: MemoryDevice, needle: Buffer): number {
  const all = Buffer.alloc(MEMBER);
  member.readSync(all, 0);
  return all.indexOf(needle, DATA_OFFSET);
}

describe('a pool on an array heals silent corruption with its checksums', () => {
  for (const [level, count] of [[1, 2], [5, 4], [6, 5], [10, 4]] as Array<[RaidLevel, number]>) {
    it(`RAID ${level}: a flipped member byte reads back correct, the member is rewritten, the counters show it`, async () => {
      const members = Array.from({ length: count }, (_, i) => new MemoryDevice({ size: MEMBER, name: `m${i}` }));
      const array = await createArray({ level, members, chunk: 64 * 1024 });
      const pool = await Pool.create(array, { clusterSize: 65536 });
      await pool.createVolume('v', 8 << 20);
      const vol = await pool.openVolume('v');
      const data = pattern(1 << 20, level);
      await vol.write(data, 1 << 20);
      await vol.flush();
      // Damage the copy of one 4 KiB piece on whichever member holds it first.
      const needle = data.subarray(300 * 1024, 300 * 1024 + 64);
      const victim = members.find((m) => locate(m, needle) >= 0)!;
      const at = locate(victim, needle);
      const bad = Buffer.from(needle);
      bad[10]! ^= 0xff;
      victim.writeSync(bad, at);
      const back = Buffer.alloc(1 << 20);
      await vol.read(back, 1 << 20);
      expect(back.equals(data)).toBe(true);
      expect(pool.counters.repairedData).toBe(1);
      expect(array.status().counters.repairs).toBeGreaterThan(0);
      const healed = Buffer.alloc(64);
      victim.readSync(healed, at);
      expect(healed.equals(needle)).toBe(true);
      expect((await pool.check()).problems).toEqual([]);
      await vol.close();
      await pool.close();
    });
  }

  it('RAID 0 has no other copy: the damage is an error naming the place', async () => {
    const members = Array.from({ length: 2 }, (_, i) => new MemoryDevice({ size: MEMBER, name: `m${i}` }));
    const array = await createArray({ level: 0, members, chunk: 64 * 1024 });
    const pool = await Pool.create(array);
    await pool.createVolume('v', 8 << 20);
    const vol = await pool.openVolume('v');
    const data = pattern(1 << 20, 9);
    await vol.write(data, 0);
    const needle = data.subarray(4096, 4096 + 64);
    const victim = members.find((m) => locate(m, needle) >= 0)!;
    const at = locate(victim, needle);
    const bad = Buffer.from(needle);
    bad[0]! ^= 1;
    victim.writeSync(bad, at);
    await expect(vol.read(Buffer.alloc(4096), 4096)).rejects.toThrow(/checksum mismatch in data of volume 'v' at virtual offset 4096/);
    expect(pool.counters.corruptData).toBe(1);
  });
});

describe('pool check over an array', () => {
  it('finds a damaged copy, and with repair rewrites it from the copy whose checksum holds', async () => {
    const members = Array.from({ length: 3 }, (_, i) => new MemoryDevice({ size: MEMBER, name: `m${i}` }));
    const array = await createArray({ level: 5, members, chunk: 64 * 1024 });
    const pool = await Pool.create(array);
    await pool.createVolume('v', 8 << 20);
    const vol = await pool.openVolume('v');
    const data = pattern(2 << 20, 3);
    await vol.write(data, 0);
    await vol.close();
    const needle = data.subarray(1 << 20, (1 << 20) + 64);
    const victim = members.find((m) => locate(m, needle) >= 0)!;
    const at = locate(victim, needle);
    victim.writeSync(Buffer.alloc(64, 0xaa), at);
    const found = await pool.check();
    expect(found.problems).toHaveLength(1);
    expect(found.problems[0]).toMatchObject({ kind: 'checksum', volume: 'v', virtualOffset: 1 << 20, repaired: false });
    const fixed = await pool.check({ repair: true });
    expect(fixed.problems[0]).toMatchObject({ kind: 'checksum', repaired: true });
    expect(fixed.repaired).toBe(1);
    expect((await pool.check()).problems).toEqual([]);
    const healed = Buffer.alloc(64);
    victim.readSync(healed, at);
    expect(healed.equals(needle)).toBe(true);
  });
});
