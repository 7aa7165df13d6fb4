import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Pool } from '../../src/qcowlike/index.js';
import { assembleArray, createArray, DATA_OFFSET, type PendingRepair } from '../../src/raid/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { scratchDir } from '../support/scratch.js';
import { damageOneMember, memberDigests, zeroAgain, type Damage } from './damage.js';

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
const scratch = scratchDir('raid-ro');
afterAll(() => scratch.cleanup());

async function readVolume(pool: Pool, size: number): Promise<Buffer> {
  const vol = await pool.openVolume('v');
  const back = Buffer.alloc(size);
  for (let o = 0; o < size; o += 4 * MiB) await vol.read(back.subarray(o, Math.min(size, o + 4 * MiB)), o);
  await vol.close();
  return back;
}

function memberBytes(file: string, at: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, b, 0, length, DATA_OFFSET + at);
  fs.closeSync(fd);
  return b;
}

for (const level of [1, 5] as const) {
  describe(`RAID ${level}: a pool opened read-only over a member damaged in several places`, () => {
    const dir = path.join(scratch.dir, `r${level}`);
    const paths = Array.from({ length: level === 1 ? 2 : 4 }, (_, i) => path.join(dir, `m${i}.img`));
    const image = pattern(32 * MiB, 40 + level);
    let damage: Damage;
    let pending: PendingRepair[] = [];

    it('is set up: a volume written, then 1 MiB runs of one member zeroed (one over an L2 table)', async () => {
      fs.mkdirSync(dir, { recursive: true });
      const array = await createArray({ level, members: paths, size: 48 * MiB, chunk: CHUNK, name: 'ro' });
      const pool = await Pool.create(array);
      await pool.createVolume('v', image.length);
      const vol = await pool.openVolume('v');
      await vol.write(image, 0);
      await vol.close();
      await pool.close();
      damage = await damageOneMember(paths, image, CHUNK, 3, MiB);
      expect(damage.ranges.length).toBe(3);
    });

    it('returns the exact data, writes nothing, and counts the repairs as pending (array, pool, check)', async () => {
      const before = memberDigests(paths);
      const { array } = await assembleArray(paths, { readOnly: true });
      const pool = await Pool.open(array, { readOnly: true });
      expect((await readVolume(pool, image.length)).equals(image), 'the volume reads back exactly').toBe(true);
      pending = array.pendingRepairs();
      expect(pending.length).toBeGreaterThan(0);
      expect(array.status().counters.pendingRepairs).toBe(pending.length);
      expect(array.status().counters.repairs).toBe(0);
      // Every pending repair blames the damaged member, and the L2 table was served from the redundancy too.
      for (const p of pending) expect(p.members).toEqual([damage.member]);
      expect(pending.some((p) => p.offset <= damage.l2ArrayOffset && damage.l2ArrayOffset < p.offset + p.length)).toBe(true);
      expect(pool.store.pendingRepairs.has(damage.l2ArrayOffset)).toBe(true);

      // A read-only check reports them, as pending, rather than hiding them (the L2 table among them).
      const report = await pool.check();
      expect(report.pendingRepairs).toBeGreaterThanOrEqual(pending.length);
      expect(report.problems.filter((p) => p.pending === true).length).toBe(report.pendingRepairs);
      expect(report.problems.every((p) => p.pending === true && !p.repaired), JSON.stringify(report.problems.filter((p) => !p.pending))).toBe(true);
      expect(report.problems.some((p) => p.hostOffset === damage.l2ArrayOffset)).toBe(true);
      await pool.close();
      expect(memberDigests(paths)).toEqual(before);
    });

    it('a read-only pool over a writable array does not write either', async () => {
      const { array } = await assembleArray(paths);
      const pool = await Pool.open(array, { readOnly: true });
      expect((await readVolume(pool, image.length)).equals(image)).toBe(true);
      expect(array.pendingRepairs().length).toBe(pending.length);
      await pool.close();
      for (const r of damage.ranges) expect(memberBytes(paths[damage.member]!, r.at, r.length).every((b) => b === 0)).toBe(true);
    });

    it('a read-write open carries the pending repairs out, and then pool check --repair and scrub leave nothing', async () => {
      const { array } = await assembleArray(paths);
      // A range nobody damaged: every way of reading it agrees, so it is dropped without a write.
      const clean = { offset: 47 * MiB, length: 4096, members: [damage.member] };
      array.addPendingRepairs([...pending, clean]);
      expect(await array.repairPending()).toEqual({ repaired: pending.length, dropped: 0 });
      expect(array.pendingRepairs()).toEqual([]);
      await array.close();
      {
        // What the read-only read found bad is good on the member again: the same read finds nothing now.
        const { array: ro } = await assembleArray(paths, { readOnly: true });
        const p = await Pool.open(ro, { readOnly: true });
        expect((await readVolume(p, image.length)).equals(image)).toBe(true);
        expect(ro.pendingRepairs()).toEqual([]);
        await p.close();
      }
      const pool = await Pool.open((await assembleArray(paths)).array);
      const array2 = pool.dev as Awaited<ReturnType<typeof assembleArray>>['array'];
      const report = await pool.check({ repair: true });
      expect(report.problems.every((p) => p.repaired), JSON.stringify(report.problems)).toBe(true);
      if (level === 5) {
        // Parity chunks in the zeroed runs: scrub --repair recomputes them from data the pool has verified.
        await array2.scrub({ repair: true });
      }
      expect((await array2.scrub()).mismatches).toEqual([]);
      expect((await pool.check()).problems).toEqual([]);
      expect((await readVolume(pool, image.length)).equals(image)).toBe(true);
      await pool.close();
    });

    it('a plain read-write open reading the damaged blocks repairs them (mirrors: whichever replica the read picked)', async () => {
      zeroAgain(paths, damage);
      {
        const { array } = await assembleArray(paths);
        const pool = await Pool.open(array);
        expect((await readVolume(pool, image.length)).equals(image)).toBe(true);
        expect(array.status().counters.repairs).toBeGreaterThan(0);
        expect(array.pendingRepairs()).toEqual([]);
        await pool.close();
      }
      const { array } = await assembleArray(paths, { readOnly: true });
      const pool = await Pool.open(array, { readOnly: true });
      expect((await readVolume(pool, image.length)).equals(image)).toBe(true);
      expect(array.pendingRepairs()).toEqual([]);
      await pool.close();
    });
  });
}
