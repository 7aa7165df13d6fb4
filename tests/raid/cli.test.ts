import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Registry } from '../../src/host/registry.js';
import { assembleArray, DATA_OFFSET } from '../../src/raid/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('raid-cli');
afterAll(() => scratch.cleanup());
const STRATA = path.resolve('dist/bin/strata.js');

function strata(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [STRATA, ...args], { cwd: scratch.dir, encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const p = (f: string): string => path.join(scratch.dir, f);

describe('strata raid (the command line)', () => {
  it('is built (npm pretest compiles it)', () => {
    expect(fs.existsSync(STRATA), `${STRATA} missing: run tsc -p .`).toBe(true);
  });

  it('creates, fails, adds and rebuilds, scrubs and repairs an array of member files', async () => {
    const members = ['a.img', 'b.img', 'c.img', 'd.img'].map(p);
    const created = strata('raid', 'create', '--level', '5', '--members', members.join(','), '--size', '3M', '--chunk', '64K', '--name', 'five');
    expect(created.code, created.err).toBe(0);
    expect(created.out).toMatch(/raid5 five/);
    const data = pattern(3 * 1024 * 1024, 11);
    {
      const { array } = await assembleArray(members);
      await array.write(data, 0);
      await array.close();
    }

    const failed = strata('raid', 'fail', '--members', members.join(','), members[1]!);
    expect(failed.code, failed.err).toBe(0);
    const rest = [members[0]!, members[2]!, members[3]!];
    const st = JSON.parse(strata('--json', 'raid', 'status', '--members', rest.join(',')).out) as { state: string; members: Array<{ state: string }> };
    expect(st.state).toBe('degraded');
    expect(st.members[1]!.state).toBe('missing');

    const added = strata('raid', 'add', '--members', rest.join(','), p('new.img'));
    expect(added.code, added.err).toBe(0);
    expect(added.err).toMatch(/rebuilding: 100%/);
    const whole = [...rest, p('new.img')];
    const st2 = JSON.parse(strata('--json', 'raid', 'status', '--members', whole.join(',')).out) as { state: string };
    expect(st2.state).toBe('optimal');

    // Flip bytes in stripe 0's parity (left-symmetric: on role 3, d.img): scrub reports it
    // and exits 1; --repair recomputes it. (Bad RAID 5 data needs the pool's checksums.)
    const fd = fs.openSync(p('d.img'), 'r+');
    fs.writeSync(fd, Buffer.alloc(64, 0xff), 0, 64, DATA_OFFSET + 4096);
    fs.closeSync(fd);
    const scrub = strata('raid', 'scrub', '--members', whole.join(','));
    expect(scrub.code).toBe(1);
    expect(scrub.out).toMatch(/mismatch at 0 length 196608: member\(s\) 3\n/);
    expect(strata('raid', 'scrub', '--repair', '--members', whole.join(',')).code).toBe(0);
    expect(strata('raid', 'scrub', '--members', whole.join(',')).out).toMatch(/0 mismatch\(es\)/);
    // Scrub and rebuild read the whole array: they can do it past the host page cache.
    expect(strata('raid', 'scrub', '--cache', 'none', '--members', whole.join(',')).out).toMatch(/0 mismatch\(es\)/);
    expect(strata('raid', 'rebuild', '--cache', 'none', '--members', whole.join(',')).err).toMatch(/nothing to rebuild/);
    {
      // The switch reaches the members: O_DIRECT refuses a member that ends mid-sector (copies, to keep these
      // whole), and the array goes on without it.
      const copies = whole.map((m, i) => {
        fs.copyFileSync(m, p(`copy${i}.img`));
        return p(`copy${i}.img`);
      });
      fs.truncateSync(copies[0]!, fs.statSync(copies[0]!).size + 100);
      const r = strata('raid', 'scrub', '--cache', 'none', '--members', copies.join(','));
      expect(r.err).toMatch(/copy0\.img: cannot open .*direct I\/O needs a size that is a multiple of 512 bytes.*treated as missing/);
      expect(r.out).toMatch(/not checked \(no redundancy left with members out\)/);
    }
    {
      const { array, warnings } = await assembleArray(whole);
      expect(warnings).toEqual([]);
      await array.fail(0);
      const back = Buffer.alloc(data.length);
      await array.read(back, 0);
      expect(Buffer.compare(back, data), 'the rebuilt member holds the data').toBe(0);
      await array.close();
    }
  });

  it('answers bad input with one line and exit status 1, usage errors with 2', () => {
    const bad = strata('raid', 'create', '--level', '7', '--members', 'x.img,y.img', '--size', '1M');
    expect(bad.code).toBe(1);
    expect(bad.err).toBe("strata: invalid RAID level '7' (use 0, 1, 5, 6 or 10)\n");
    const few = strata('raid', 'create', '--level', '6', '--members', 'x.img,y.img', '--size', '1M');
    expect(few.code).toBe(1);
    expect(few.err).toBe('strata: RAID 6 needs at least 4 members, got 2\n');
    const junk = p('junk.img');
    fs.writeFileSync(junk, Buffer.alloc(100_000, 1));
    const none = strata('raid', 'assemble', junk);
    expect(none.code).toBe(1);
    expect(none.err).toMatch(/^strata: no Strata RAID member among 1 given device\(s\)/);
    const which = strata('raid', 'status');
    expect(which.code).toBe(1);
    expect(which.err).toBe('strata: which array? give a pool name or --members a.img,b.img,…\n');
    expect(strata('raid', 'add', 'x.img').code).toBe(2);
    const nopool = strata('--home', p('home'), 'raid', 'status', 'nosuch');
    expect(nopool.code).toBe(1);
    expect(nopool.err).toMatch(/^strata: pool 'nosuch' not found/);
  });

  it('addresses the array under a registered pool by the pool name', async () => {
    const home = p('home-pool');
    const members = ['p0.img', 'p1.img', 'p2.img', 'p3.img'].map((f) => path.join(home, 'raid', f));
    fs.mkdirSync(path.dirname(members[0]!), { recursive: true });
    const created = strata('raid', 'create', '--level', '6', '--members', members.join(','), '--size', '1M', '--chunk', '64K', '--name', 'pool0');
    expect(created.code, created.err).toBe(0);
    // What `strata pool create --raid` registers: member paths relative to the home.
    new Registry(home).add({ name: 'pool0', backing: { kind: 'raid', level: '6', members: members.map((m) => path.relative(home, m)), chunk: 65536 }, created: new Date().toISOString() });
    const st = strata('--home', home, '--json', 'raid', 'status', 'pool0');
    expect(st.code, st.err).toBe(0);
    expect((JSON.parse(st.out) as { name: string; state: string }).state).toBe('optimal');
    expect(strata('--home', home, 'raid', 'fail', '--pool', 'pool0', '2').code).toBe(0);
    const after = JSON.parse(strata('--home', home, '--json', 'raid', 'status', 'pool0').out) as { state: string; members: Array<{ state: string }> };
    expect(after.state).toBe('degraded');
    expect(after.members[2]!.state).toBe('missing');
    // Degraded RAID 6 over 4 with one member out: every stripe is still checked with the syndrome left.
    const scrub = strata('--home', home, '--json', 'raid', 'scrub', 'pool0');
    expect(scrub.code, scrub.err).toBe(0);
    expect(JSON.parse(scrub.out)).toMatchObject({ bytesChecked: 1 << 20, bytesUnchecked: 0, mismatches: [] });
    // Repair could overwrite the only good copy of a block it cannot place: refused until the rebuild.
    const repair = strata('--home', home, 'raid', 'scrub', 'pool0', '--repair');
    expect(repair.code).toBe(1);
    expect(repair.err).toMatch(/degraded.*repairing scrub needs every member.*rebuild first/);
  });
});
