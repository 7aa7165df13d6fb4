import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pattern } from '../support/blockdev-contract.js';
import { scratchDir } from '../support/scratch.js';
import { buildCli, strata, type Run } from '../cli/strata.js';
import { hasTool, startServe, tool } from '../nbd/support.js';
import { damageOneMember, zeroAgain, type Damage } from './damage.js';

const MiB = 1024 * 1024;
const scratch = scratchDir('raid-ro-cli');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
const haveNbdcopy = hasTool('nbdcopy');

interface Status {
  counters: { pendingRepairs: number; repairs: number };
  pendingRepairs: Array<{ offset: number; length: number; members: number[] }>;
}

interface Check {
  clean: boolean;
  pendingRepairs: number;
  problems: Array<{ pending?: boolean; repaired: boolean; hostOffset?: number }>;
}

function run(home: string, ...args: string[]): Run {
  return strata(home, args, { cwd: scratch.dir });
}

function succeeds(home: string, ...args: string[]): Run {
  const r = run(home, ...args);
  expect(r.code, `strata ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

function status(home: string): Status {
  return JSON.parse(succeeds(home, '--json', 'raid', 'status', 'p').stdout) as Status;
}

function sameFile(file: string, image: Buffer): boolean {
  return fs.readFileSync(file).equals(image);
}

for (const level of [1, 5] as const) {
  describe(`strata on a RAID ${level} pool with one member damaged in several places`, () => {
    const home = path.join(scratch.dir, `home${level}`);
    const members = Array.from({ length: level === 1 ? 2 : 4 }, (_, i) => path.join(scratch.dir, `r${level}-m${i}.img`));
    const image = pattern(16 * MiB, 70 + level);
    const raw = path.join(scratch.dir, `r${level}.raw`);
    let l2ArrayOffset = -1;
    let damage: Damage;

    it('is set up: pool create, import, then 1 MiB runs of one member zeroed', async () => {
      succeeds(home, 'pool', 'create', 'p', '--raid', String(level), '--members', members.join(','), '--size', '32M', '--chunk', '64K');
      fs.writeFileSync(raw, image);
      succeeds(home, 'import', 'p/v', raw);
      damage = await damageOneMember(members, image, 64 * 1024, 3, MiB);
      l2ArrayOffset = damage.l2ArrayOffset;
    });

    it('export (a read-only open) writes the exact image and leaves the repairs pending, which raid status counts', () => {
      const out = path.join(scratch.dir, `r${level}-out.raw`);
      const r = succeeds(home, 'export', 'p/v', out);
      expect(r.stderr).toMatch(/its repair, and any more like it, is pending \(open read-only/);
      // One line for the whole export, not one per bad block.
      expect(r.stderr.match(/pending/g)).toHaveLength(1);
      expect(sameFile(out, image), 'exported image').toBe(true);
      const st = status(home);
      expect(st.counters.pendingRepairs).toBeGreaterThan(0);
      expect(st.counters.pendingRepairs).toBe(st.pendingRepairs.length);
      expect(st.pendingRepairs.some((p) => p.offset <= l2ArrayOffset && l2ArrayOffset < p.offset + p.length)).toBe(true);
      expect(succeeds(home, 'raid', 'status', 'p').stdout).toMatch(new RegExp(`pending repairs ${st.counters.pendingRepairs}\\b`));
    });

    it.skipIf(!haveNbdcopy)('serve --read-only: nbdcopy copies the exact image; raid status asks the server', async () => {
      const serve = await startServe(['--home', home, 'p', '--read-only', '--listen', '127.0.0.1:0']);
      const out = path.join(scratch.dir, `r${level}-nbd.raw`);
      try {
        await tool('nbdcopy', [serve.uri, out]);
        expect(sameFile(out, image), 'image copied by nbdcopy').toBe(true);
        expect(status(home).counters.pendingRepairs).toBeGreaterThan(0);
      } finally {
        expect(await serve.stop(), serve.stderr()).toBe(0);
      }
    });

    it('pool check (read-only) reports the bad copies as pending problems and exits 1', () => {
      const r = run(home, '--json', 'pool', 'check', 'p');
      expect(r.code, r.stderr).toBe(1);
      const report = JSON.parse(r.stdout) as Check;
      expect(report.clean).toBe(false);
      expect(report.pendingRepairs).toBeGreaterThan(0);
      expect(report.problems.every((p) => p.pending === true)).toBe(true);
      expect(report.problems.some((p) => p.hostOffset === l2ArrayOffset)).toBe(true);
      const human = run(home, 'pool', 'check', 'p');
      expect(human.stdout).toMatch(/\bpending\b/);
      expect(human.stdout).toMatch(/pending repairs?\n/);
      expect(human.stderr).toMatch(/pending repair \(a good copy exists\) \(try --repair\)/);
    });

    it('a read-write repair afterwards fixes the member: scrub finds nothing, nothing is pending', () => {
      if (level === 5) {
        // The pending repairs name the bad member: scrub --repair rebuilds those ranges from the others
        // first, then recomputes the parity chunks the damage hit from data the pool has verified.
        const r = succeeds(home, 'raid', 'scrub', '--repair', 'p');
        expect(r.stderr).toMatch(/\d+ pending repair\(s\) carried out/);
      } else {
        // Mirrors: pool check --repair reads every replica against the checksums and rewrites the bad ones.
        const r = succeeds(home, 'pool', 'check', '--repair', 'p');
        expect(r.stderr).toMatch(/\d+ pending repair\(s\) carried out/);
      }
      expect(succeeds(home, 'raid', 'scrub', 'p').stdout).toMatch(/: 0 mismatch\(es\)/);
      expect(run(home, 'pool', 'check', 'p').code).toBe(0);
      expect(status(home).counters.pendingRepairs).toBe(0);
      const out = path.join(scratch.dir, `r${level}-after.raw`);
      const again = succeeds(home, 'export', 'p/v', out);
      expect(again.stderr).not.toMatch(/pending/);
      expect(sameFile(out, image)).toBe(true);
    });

    it('pending repairs are kept in the home until the pool is deleted', () => {
      zeroAgain(members, damage);
      succeeds(home, 'export', 'p/v', path.join(scratch.dir, `r${level}-again.raw`), '--force');
      const dir = path.join(home, 'pending-repairs');
      expect(fs.readdirSync(dir)).toHaveLength(1);
      succeeds(home, 'pool', 'delete', 'p', '--force');
      expect(fs.readdirSync(dir)).toEqual([]);
    });
  });
}
