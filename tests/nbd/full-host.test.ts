import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allocated, buildCli, ok, strata } from '../cli/strata.js';
import { scratchDir } from '../support/scratch.js';
import { hasTool, startServe, tool } from './support.js';

const MiB = 1 << 20;

/**
 * A host file system that fills up under a served pool (a 64 MiB tmpfs under
 * a 256 MiB sparse pool file), driven by qemu-io as a guest would: the write
 * that does not fit fails, later writes and flushes that do fit are
 * acknowledged and durable, discard gives space back, and after kill -9 the
 * pool opens and checks clean with every flushed byte in place. Mounting
 * needs root; in CI (root) it always runs.
 */
const root = process.getuid?.() === 0;
if (!root && process.env.CI === 'true') throw new Error('the full-host test mounts a tmpfs and needs root in CI');

describe.skipIf(!root)('a served pool on a host file system that fills up', () => {
  const { dir, cleanup } = scratchDir('fullhost');
  const mnt = path.join(dir, 'small');
  const home = path.join(mnt, 'h');
  const pattern = (byte: number, n: number): Buffer => Buffer.alloc(n, byte);

  beforeAll(() => {
    buildCli();
    fs.mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64M', 'tmpfs', mnt]);
  });
  afterAll(() => {
    try {
      execFileSync('umount', [mnt]);
    } finally {
      cleanup();
    }
  });

  it('fails the write that does not fit, keeps every flushed byte, and stays usable', async () => {
    expect(hasTool('qemu-io')).toBe(true);
    ok(home, ['pool', 'create', 'p', '--size', '256M']);
    ok(home, ['volume', 'create', 'p/v', '200M']);
    // The second volume overcommits the pool on purpose: the create warns, and succeeds.
    expect(strata(home, ['volume', 'create', 'p/w', '200M']).code).toBe(0);
    const pool = path.join(home, 'p.pool');
    const srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    const uri = (name: string): string => srv.uri.replace(/\/[^/]*$/, `/${name}`);
    const io = (name: string, ...cmds: string[]): Promise<string> => tool('qemu-io', ['-f', 'raw', uri(name), ...cmds.flatMap((c) => ['-c', c])]);
    try {
      await io('w', 'write -P 0x57 0 8M', 'flush');
      await io('v', 'write -P 0x41 0 32M', 'flush');
      // 64 MiB more cannot fit in what is left of the 64 MiB host.
      await expect(io('v', 'write -P 0x42 32M 64M')).rejects.toThrow(/No space left on device/);
      expect(await io('v', 'flush')).not.toMatch(/failed/);
      // An overwrite of data already on the host needs no new host space: acknowledged, then durable.
      const out = await io('v', 'write -P 0x43 0 4k', 'flush');
      expect(out).toMatch(/wrote 4096\/4096/);
      expect(out).not.toMatch(/failed/);
      // Discard hands space back: the pool file shrinks on the host and new writes fit again.
      const before = allocated(pool);
      await io('v', 'discard 16M 16M', 'flush');
      expect(allocated(pool)).toBeLessThan(before - 8 * MiB);
      await io('v', 'write -P 0x44 16M 4M', 'flush');
      // Fill the host again, then lose the server.
      await expect(io('v', 'write -P 0x45 40M 64M')).rejects.toThrow(/No space left on device/);
    } finally {
      await srv.stop('SIGKILL');
    }
    // On the full host the pool still opens (its replay cannot checkpoint yet), checks clean, and a
    // delete gives space back (the catalog takes a run the host still backs).
    const check = strata(home, ['pool', 'check', 'p']);
    expect(check.stdout + check.stderr).toMatch(/0 problems/);
    expect(check.code).toBe(0);
    const before = allocated(pool);
    ok(home, ['volume', 'delete', 'p/w']);
    expect(allocated(pool)).toBeLessThan(before - 6 * MiB);
    execFileSync('mount', ['-o', 'remount,size=256M', mnt]);
    expect(strata(home, ['pool', 'check', 'p']).code).toBe(0);
    const img = path.join(dir, 'out.raw');
    ok(home, ['export', 'p/v', img]);
    const got = fs.readFileSync(img);
    expect(got.subarray(0, 4096).equals(pattern(0x43, 4096))).toBe(true);
    expect(got.subarray(4096, 16 * MiB).equals(pattern(0x41, 16 * MiB - 4096))).toBe(true);
    expect(got.subarray(16 * MiB, 20 * MiB).equals(pattern(0x44, 4 * MiB))).toBe(true);
    expect(got.subarray(20 * MiB, 32 * MiB).every((b) => b === 0)).toBe(true);
    // What the failed writes left is old (zeroes) or new in every sector, never garbage.
    for (let s = 32 * MiB; s < 104 * MiB; s += 512) {
      const b = got[s]!;
      expect(b === 0 || b === 0x42 || (b === 0x45 && s >= 40 * MiB), `sector at ${s}`).toBe(true);
      expect(got.subarray(s, s + 512).every((x) => x === b)).toBe(true);
    }
  }, 180_000);
});
