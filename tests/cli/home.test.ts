import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inProcessFails } from './in-process.js';
import { buildCli, fails, ok, repo } from './strata.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-home');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());

/** Every command that meets the home, with arguments that would otherwise get past their own checks. */
const COMMANDS = [
  ['pool', 'list'],
  ['pool', 'create', 'p0', '--size', '64M'],
  ['pool', 'info', 'p0'],
  ['pool', 'check', 'p0'],
  ['pool', 'delete', 'p0', '--force'],
  ['volume', 'create', 'p0/v', '1M'],
  ['volume', 'list', 'p0'],
  ['volume', 'info', 'p0/v'],
  ['map', 'p0/v'],
  ['import', 'p0/v', '/dev/null'],
  // In the scratch directory, so a command that got past the check would leave its file where the test looks.
  ['export', 'p0/v', path.join(scratch.dir, 'out.raw')],
  ['raid', 'status', 'p0'],
  ['serve', '--listen', '127.0.0.1:0'],
];

describe('a home that cannot be one', () => {
  it('a regular file as home is one line for every command, exit 1, and nothing is created', async () => {
    const home = path.join(scratch.dir, 'a-file');
    fs.writeFileSync(home, 'not a directory');
    for (const args of COMMANDS) {
      expect(await inProcessFails(home, args), args.join(' ')).toBe(`home '${home}' is not a directory`);
    }
    // Through STRATA_HOME as well.
    expect(fails(null, ['pool', 'list'], { env: { STRATA_HOME: home } })).toBe(`strata: home '${home}' is not a directory`);
    // Below a file: the message names the file in the way.
    expect(fails(`${home}/sub`, ['pool', 'create', 'p0', '--size', '64M'])).toBe(`strata: home '${home}/sub' is not a directory (${home} is a file)`);
    expect(fs.readFileSync(home, 'utf8')).toBe('not a directory');
    expect(fs.readdirSync(scratch.dir)).toEqual(['a-file']);
  });

  it('a home that cannot be created, or read, or written, says so in one line', async () => {
    // Permissions bind only an unprivileged user: as root, the commands run as nobody.
    const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    fs.chmodSync(scratch.dir, 0o755);
    const locked = path.join(scratch.dir, 'locked');
    fs.mkdirSync(locked, { mode: 0o755 });
    if (!('uid' in asUser)) fs.chmodSync(locked, 0o555);
    const run = (home: string, args: string[]): { code: number; stderr: string } => {
      const r = spawnSync(process.execPath, [path.join(repo, 'dist/bin/strata.js'), '--home', home, ...args], { encoding: 'utf8', cwd: '/', ...asUser });
      if (r.error) throw r.error;
      return { code: r.status ?? -1, stderr: r.stderr };
    };
    const cannot = `strata: cannot create home '${locked}/h': permission denied\n`;
    expect(run(`${locked}/h`, ['pool', 'create', 'p0', '--size', '64M'])).toEqual({ code: 1, stderr: cannot });
    expect(run(`${locked}/h`, ['serve', '--listen', '127.0.0.1:0'])).toEqual({ code: 1, stderr: cannot });
    expect(fs.readdirSync(locked)).toEqual([]);
    // A home that does not exist yet is simply empty to a command that only reads.
    expect(run(`${locked}/h`, ['pool', 'list'])).toEqual({ code: 0, stderr: '' });
    // One that exists but refuses writes, reads or entry.
    expect(run(locked, ['pool', 'create', 'p0', '--size', '64M'])).toEqual({ code: 1, stderr: `strata: home '${locked}' is not writable: permission denied\n` });
    const closed = path.join(scratch.dir, 'closed');
    fs.mkdirSync(path.join(closed, 'h'), { recursive: true });
    fs.chmodSync(path.join(closed, 'h'), 0o311);
    expect(run(path.join(closed, 'h'), ['pool', 'list'])).toEqual({ code: 1, stderr: `strata: home '${closed}/h' is not readable: permission denied\n` });
    fs.chmodSync(path.join(closed, 'h'), 0o755);
    fs.chmodSync(closed, 0o700);
    if (!('uid' in asUser)) fs.chmodSync(closed, 0o000);
    expect(run(path.join(closed, 'h'), ['volume', 'list', 'p0'])).toEqual({ code: 1, stderr: `strata: home '${closed}/h' cannot be reached: permission denied\n` });
    fs.chmodSync(closed, 0o755);
    fs.chmodSync(locked, 0o755);
    // The same homes work once they can be used.
    ok(path.join(closed, 'h'), ['pool', 'create', 'p0', '--size', '64M']);
  });
});
