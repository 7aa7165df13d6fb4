import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { largestFileSize } from '../../src/host/file-size-limit.js';
import { formatSize } from '../../bin/size.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { buildCli, repo } from './strata.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-failed-create');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
let n = 0;
const fresh = (name: string): string => path.join(scratch.dir, `${n++}-${name}`);
const PETA = 1024 ** 5;

/** Runs the CLI with a file-size limit (ulimit -f, in 512-byte blocks as sh counts them): ftruncate past it fails with EFBIG on any file system. */
function withFileLimit(blocks: number, home: string, args: string[]): { code: number; stderr: string } {
  const cli = path.join(repo, 'dist/bin/strata.js');
  const r = spawnSync('sh', ['-c', `ulimit -f ${blocks} && exec "$@"`, 'sh', process.execPath, cli, '--home', home, ...args], { encoding: 'utf8' });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stderr: r.stderr };
}

describe('a pool create that fails leaves nothing behind', () => {
  it('a file the file system refuses (EFBIG at 1P) leaves no file, no directory, no registration, names the limit, and the retry works', async () => {
    const limit = largestFileSize(scratch.dir);
    if (limit === undefined || limit >= PETA) {
      throw new Error(`this test needs a scratch file system that refuses 1P files, like ext4 (${scratch.dir} takes ${limit}); set STRATA_SCRATCH`);
    }
    // A fresh home: the directories the create made go too.
    const home = fresh('home');
    expect(await inProcessFails(home, ['pool', 'create', 'q', '--size', '1P'])).toBe(
      `cannot create pool 'q': ${home}/q.pool: its file system takes files of at most ${formatSize(limit)} (${limit} bytes), not 1P`,
    );
    expect(fs.existsSync(home)).toBe(false);
    // A home that holds another pool: only the new pool's traces go.
    await inProcess(home, ['pool', 'create', 'other', '--size', '64M']);
    const before = fs.readdirSync(home).sort();
    const registered = fs.readdirSync(path.join(home, 'pools')).sort();
    expect(await inProcessFails(home, ['pool', 'create', 'q', '--size', '1P'])).toMatch(/^cannot create pool 'q': .*q\.pool: its file system takes files of at most .*, not 1P$/);
    expect(fs.readdirSync(home).sort()).toEqual(before);
    expect(fs.readdirSync(path.join(home, 'pools')).sort()).toEqual(registered);
    // The retry is not refused as "already exists".
    await inProcess(home, ['pool', 'create', 'q', '--size', '64M']);
    expect((await inProcessJson<{ name: string }[]>(home, ['pool', 'list'])).map((p) => p.name)).toEqual(['other', 'q']);
  });

  it('says when the limit is the process file-size limit rather than the file system', async () => {
    const home = fresh('home');
    const r = withFileLimit(2048, home, ['pool', 'create', 'q', '--size', '1G']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`strata: cannot create pool 'q': ${home}/q.pool: this process may make files (ulimit -f) of at most 1M (1048576 bytes), not 1G\n`);
    expect(fs.existsSync(home)).toBe(false);
    // An export larger than the limit says the same, and leaves no file.
    await inProcess(home, ['pool', 'create', 'p', '--size', '64M']);
    await inProcess(home, ['volume', 'create', 'p/v', '2M']);
    const out = fresh('out.raw');
    const e = withFileLimit(2048, home, ['export', 'p/v', out]);
    expect(e).toEqual({ code: 1, stderr: `strata: cannot export p/v: ${out}: this process may make files (ulimit -f) of at most 1M (1048576 bytes), not 2M\n` });
    expect(fs.existsSync(out)).toBe(false);
  });

  it('--raid: member files it created are removed, whichever member failed; members that existed are kept', async () => {
    const home = fresh('home');
    await inProcess(home, ['pool', 'create', 'other', '--size', '64M']);
    const dir = fresh('members');
    fs.mkdirSync(dir);
    // The third member's directory does not exist: the first two were already created when it fails.
    const members = [path.join(dir, 'a'), path.join(dir, 'b'), path.join(dir, 'missing', 'c')];
    expect(await inProcessFails(home, ['pool', 'create', 'r', '--size', '64M', '--raid', '5', '--members', members.join(',')])).toMatch(/^cannot create pool 'r': /);
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(fs.readdirSync(path.join(home, 'pools'))).toEqual(['other.json']);

    // An EFBIG on a member: the one made before it goes, the one that was there stays as it was.
    const kept = path.join(dir, 'kept');
    fs.writeFileSync(kept, '');
    fs.truncateSync(kept, 128 << 20);
    const r = withFileLimit(2048, home, ['pool', 'create', 'r', '--size', '64M', '--raid', '1', '--members', [kept, path.join(dir, 'new1'), path.join(dir, 'new2')].join(',')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^strata: cannot create pool 'r': member ${dir}/new1: this process may make files \\(ulimit -f\\) of at most 1M \\(1048576 bytes\\)\n$`));
    expect(fs.readdirSync(dir)).toEqual(['kept']);
    expect(fs.statSync(kept).size).toBe(128 << 20);
    expect(fs.readdirSync(path.join(home, 'pools'))).toEqual(['other.json']);
    // And the same create then works.
    await inProcess(home, ['pool', 'create', 'r', '--size', '64M', '--raid', '1', '--members', members.slice(0, 2).join(',')]);
  });

  it('sizes past 8P name the limit instead of calling them fractions', async () => {
    const home = fresh('home');
    for (const size of ['8P', '100P']) {
      expect(await inProcessFails(home, ['pool', 'create', 'q', '--size', size])).toBe(`size '${size}' is too large: sizes go up to 9007199254740991 bytes (8P less one byte)`);
    }
    expect(fs.existsSync(home)).toBe(false);
    await inProcess(home, ['pool', 'create', 'p', '--size', '64M']);
    expect(await inProcessFails(home, ['volume', 'create', 'p/v', '100P'])).toBe(`size '100P' is too large: sizes go up to 9007199254740991 bytes (8P less one byte)`);
    expect(await inProcessFails(home, ['volume', 'create', 'p/v', '100T'])).toMatch(/^.*maximum of 64T/);
  });
});
