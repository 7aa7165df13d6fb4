import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileDevice } from '../../src/blockdev/index.js';
import { assembleArray, createArray } from '../../src/raid/index.js';
import { encodeSuperblock, initChecksum, newestSuperblock, slotOffset } from '../../src/raid/superblock.js';
import { pattern } from '../support/blockdev-contract.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('raid-assemble');
afterAll(() => scratch.cleanup());
let seq = 0;
const SIZE = 768 * 1024;

function paths(n: number, tag: string): string[] {
  const run = seq++;
  return Array.from({ length: n }, (_, i) => path.join(scratch.dir, `${tag}-${run}-${i}.img`));
}

function shuffle<T>(xs: T[], seed: number): T[] {
  const out = [...xs];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function readAll(dev: { size: number; read(b: Uint8Array, o: number): Promise<void> }): Promise<Buffer> {
  const b = Buffer.alloc(dev.size);
  await dev.read(b, 0);
  return b;
}

describe('assembling an array from its members', () => {
  it('assembles from members in any order with the data intact', async () => {
    const ps = paths(4, 'r5');
    const array = await createArray({ level: 5, members: ps, size: SIZE, chunk: 16 * 1024 });
    const data = pattern(SIZE, 42);
    await array.write(data, 0);
    await array.close();
    for (const seed of [1, 2, 3]) {
      const { array: again, warnings } = await assembleArray(shuffle(ps, seed));
      expect(warnings).toEqual([]);
      expect(again.status().state).toBe('optimal');
      expect(Buffer.compare(await readAll(again), data)).toBe(0);
      await again.close();
    }
  });

  it('refuses a foreign member, reports a stale one and a missing one, and starts degraded', async () => {
    const ps = paths(6, 'r6');
    const array = await createArray({ level: 6, members: ps, size: SIZE, chunk: 16 * 1024, name: 'six' });
    const before = pattern(SIZE, 7);
    await array.write(before, 0);
    await array.fail(2);
    // Written after member 2 left: member 2 holds none of it.
    const after = pattern(SIZE / 2, 8);
    await array.write(after, 100_000);
    await array.close();
    const expected = Buffer.from(before);
    after.copy(expected, 100_000);

    const foreign = paths(4, 'other');
    await (await createArray({ level: 5, members: foreign, size: SIZE, chunk: 16 * 1024, name: 'other' })).close();

    const given = shuffle([...ps.filter((_, i) => i !== 4), foreign[1]!], 9);
    const { array: again, warnings } = await assembleArray(given);
    expect(warnings.some((w) => w.startsWith(foreign[1]!) && /another array/.test(w))).toBe(true);
    expect(warnings.some((w) => w.startsWith(ps[2]!) && /stale/.test(w))).toBe(true);
    expect(warnings.some((w) => /member 4 .* is missing/.test(w))).toBe(true);
    expect(warnings.some((w) => /degraded: 2 of 6/.test(w))).toBe(true);
    const st = again.status();
    expect(st.state).toBe('degraded');
    expect(st.members.map((m) => m.state)).toEqual(['active', 'active', 'missing', 'active', 'missing', 'active']);
    expect(Buffer.compare(await readAll(again), expected)).toBe(0);
    await again.close();
  });

  it('refuses to start when more members are gone than the level survives', async () => {
    const ps = paths(4, 'r5gone');
    await (await createArray({ level: 5, members: ps, size: SIZE, chunk: 16 * 1024 })).close();
    await expect(assembleArray([ps[0]!, ps[1]!])).rejects.toThrow(/2 of 4 members are missing.*more than it survives/);
    // The refused members were not touched: all four still assemble.
    const { array, warnings } = await assembleArray(ps);
    expect(warnings).toEqual([]);
    await array.close();
  });

  it('refuses files that are not members, and a torn superblock falls back to the other slot', async () => {
    const ps = paths(3, 'r1');
    const array = await createArray({ level: 1, members: ps, size: SIZE, chunk: 16 * 1024 });
    const data = pattern(SIZE, 3);
    await array.write(data, 0);
    await array.close();
    const junk = path.join(scratch.dir, `junk-${seq++}.img`);
    fs.writeFileSync(junk, Buffer.alloc(128 * 1024, 0x11));
    // Tear the newest superblock slot of member 0: garbage in its middle.
    const dev = FileDevice.open(ps[0]!);
    const header = Buffer.alloc(8192);
    await dev.read(header, 0);
    const newest = header.readBigUInt64LE(88) > header.readBigUInt64LE(4096 + 88) ? 0 : 4096;
    await dev.write(Buffer.alloc(512, 0xee), newest + 512);
    await dev.close();
    const { array: again, warnings } = await assembleArray([junk, ...ps]);
    expect(warnings).toEqual([`${junk}: not a Strata RAID member (no valid superblock); refused`]);
    expect(again.status().state).toBe('optimal');
    expect(Buffer.compare(await readAll(again), data)).toBe(0);
    await again.close();
  });

  it('will not create an array over members of another array unless forced', async () => {
    const ps = paths(3, 'reuse');
    await (await createArray({ level: 5, members: ps, size: SIZE, chunk: 16 * 1024 })).close();
    await expect(createArray({ level: 1, members: ps, size: SIZE })).rejects.toThrow(/already a member of RAID 5 array/);
    const forced = await createArray({ level: 1, members: ps, size: SIZE / 2, chunk: 16 * 1024, force: true });
    expect(forced.status().level).toBe(1);
    await forced.close();
  });

  it('refuses a member whose superblock checksums but describes nonsense', async () => {
    await initChecksum();
    const cases: Array<[string, number, RegExp]> = [
      ['chunk', 3, /invalid chunk size 3/],
      ['rows', 1_000_000, /device holds \d+ bytes, the array needs/],
      ['bitmapRegion', 0, /invalid bitmap region 0/],
      ['members', 1, /RAID 5 with 1 members/],
      ['arraySize', 2 ** 50, /larger than the members hold/],
    ];
    for (const [field, value, problem] of cases) {
      const ps = paths(3, 'hostile');
      const data = pattern(SIZE / 2, 4);
      const array = await createArray({ level: 5, members: ps, size: SIZE / 2, chunk: 16 * 1024 });
      await array.write(data, 0);
      await array.close();
      // Crafted with a valid checksum and a higher event count, so it would be taken as the truth if believed.
      const dev = FileDevice.open(ps[0]!);
      const header = Buffer.alloc(8192);
      await dev.read(header, 0);
      const sb = newestSuperblock(header)!;
      await dev.write(encodeSuperblock({ ...sb, events: sb.events + 1, [field]: value }), slotOffset(sb.events + 1));
      await dev.close();
      const { array: again, warnings } = await assembleArray(ps);
      expect(warnings.find((w) => w.startsWith(ps[0]!)), field).toMatch(problem);
      expect(again.status().state).toBe('degraded');
      const back = Buffer.alloc(data.length);
      await again.read(back, 0);
      expect(Buffer.compare(back, data)).toBe(0);
      await again.close();
    }
  });

  it('refuses to assemble an array another open already holds', async () => {
    const ps = paths(3, 'busy');
    const array = await createArray({ level: 5, members: ps, size: SIZE / 2, chunk: 16 * 1024 });
    await expect(assembleArray(ps)).rejects.toThrow(/member is locked: the array is in use by another process/);
    await expect(assembleArray([...ps].reverse(), { readOnly: true })).rejects.toThrow(/in use by another process/);
    await array.close();
    const { array: again, warnings } = await assembleArray(ps);
    expect(warnings).toEqual([]);
    await again.close();
  });
});
