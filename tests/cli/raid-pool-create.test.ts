import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { buildCli, fails } from './strata.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-raid-pool-create');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
let n = 0;
const fresh = (): { home: string; dir: string } => {
  const dir = path.join(scratch.dir, `case${n++}`);
  fs.mkdirSync(dir);
  return { home: path.join(dir, 'home'), dir };
};
const members = (dir: string, count: number, size: number | null): string[] =>
  Array.from({ length: count }, (_, i) => {
    const f = path.join(dir, `m${i}`);
    if (size !== null) fs.writeFileSync(f, '') , fs.truncateSync(f, size);
    return f;
  });

interface Status {
  level: number;
  size: number;
  members: { device: string; state: string }[];
  spares: { device: string }[];
}

describe('pool create --raid over existing members', () => {
  it('sizes the array from the smallest existing member when --size is omitted, as mdadm does', async () => {
    const { home, dir } = fresh();
    const m = members(dir, 6, 256 << 20);
    fs.truncateSync(m[3]!, 200 << 20);
    const out = await inProcess(home, ['pool', 'create', 'r6', '--raid', '6', '--members', m.join(','), '--chunk', '64K']);
    // Each member keeps 64K for superblock and bitmap: four data members of 200M less 64K.
    expect(out).toBe(`created pool 'r6': 800M on RAID 6 over 6 members (cluster size 64K)\n`);
    const st = await inProcessJson<Status>(home, ['raid', 'status', 'r6']);
    expect(st.size).toBe(4 * ((200 << 20) - (64 << 10)));
    // Existing files are used as they are, never grown.
    expect(m.map((f) => fs.statSync(f).size)).toEqual([256, 256, 256, 200, 256, 256].map((s) => s << 20));
  });

  it('creates missing members at the size of the existing ones', async () => {
    const { home, dir } = fresh();
    const m = members(dir, 3, null);
    fs.writeFileSync(m[0]!, '');
    fs.truncateSync(m[0]!, 64 << 20);
    await inProcess(home, ['pool', 'create', 'r5', '--raid', '5', '--members', m.join(',')]);
    expect(m.map((f) => fs.statSync(f).size)).toEqual([64 << 20, 64 << 20, 64 << 20]);
  });

  it('explains a --size that forgets the 64K each member keeps, and names the size that fits', async () => {
    const { home, dir } = fresh();
    const m = members(dir, 6, 256 << 20);
    // The process itself: exit 1 and one line on stderr, in the terms of pool create's options.
    const line = fails(home, ['pool', 'create', 'r6', '--size', '1G', '--raid', '6', '--members', m.join(','), '--chunk', '64K']);
    expect(line).toBe(
      `strata: cannot create pool 'r6': member ${m[0]} is too small: it holds 256M, an array of 1G needs 256M + 64K per member (the 64K is superblock and bitmap); omit --size to use the 1048320K they hold`,
    );
    expect(fs.existsSync(path.join(home, 'pools', 'r6.json'))).toBe(false);
    for (const f of m) expect(fs.statSync(f).size).toBe(256 << 20);
  });

  it('takes --spares, --copies and --force as raid create does, and its reuse hint names --force', async () => {
    const { home, dir } = fresh();
    const m = members(dir, 4, 64 << 20);
    const spare = path.join(dir, 'spare');
    const out = await inProcess(home, ['pool', 'create', 'r10', '--raid', '10', '--copies', '4', '--members', m.join(','), '--spares', spare, '--chunk', '64K']);
    expect(out).toMatch(/^created pool 'r10': 63\.9M on RAID 10 over 4 members and 1 spare /);
    const st = await inProcessJson<Status>(home, ['raid', 'status', 'r10']);
    expect(st.members.map((x) => x.state)).toEqual(['active', 'active', 'active', 'active']);
    expect(st.spares.map((s) => s.device)).toEqual([spare]);
    // Registered with the members, so the next open assembles the spare too (it survived the reopen above).
    expect(fs.statSync(spare).size).toBe(64 << 20);

    const again = await inProcessFails(home, ['pool', 'create', 'other', '--raid', '1', '--members', `${m[0]},${m[1]}`]);
    expect(again).toMatch(new RegExp(`^cannot create pool 'other': ${m[0]} is already a member of RAID 10 array [0-9a-f-]+ \\(r10\\); use --force to reuse it$`));
    expect(await inProcessFails(home, ['raid', 'create', '--level', '1', '--members', `${m[0]},${m[1]}`])).toMatch(/already a member of RAID 10 array .*; use --force to reuse it$/);
    await inProcess(home, ['pool', 'delete', 'r10', '--force']);
    const m2 = members(dir, 2, 32 << 20);
    await inProcess(home, ['raid', 'create', '--level', '1', '--members', m2.join(',')]);
    expect(await inProcess(home, ['pool', 'create', 'reused', '--raid', '1', '--members', m2.join(','), '--force'])).toMatch(/^created pool 'reused': 31\.5M on RAID 1 over 2 members/);
    expect(await inProcessFails(home, ['pool', 'create', 'plain', '--copies', '2'])).toBe('--copies goes with --raid LEVEL');
  });
});
