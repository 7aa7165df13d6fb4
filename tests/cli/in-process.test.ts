import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessFails, inProcessJson, inProcessRun } from './in-process.js';

const scratch = scratchDir('cli-in-process');
afterAll(() => scratch.cleanup());

describe('in-process runs end as the CLI does', () => {
  it('a user error is exit 1 and one line; inProcess rejects it, inProcessFails returns it without the prefix', async () => {
    const home = path.join(scratch.dir, 'h');
    expect(await inProcessRun(home, ['pool', 'info', 'nope'])).toEqual({ code: 1, stdout: '', stderr: `strata: pool 'nope' not found in ${home}\n` });
    await expect(inProcess(home, ['pool', 'info', 'nope'])).rejects.toThrow(`pool 'nope' not found in ${home}`);
    expect(await inProcessFails(home, ['pool', 'info', 'nope'])).toBe(`pool 'nope' not found in ${home}`);
    expect(await inProcessRun(home, ['--json', 'pool', 'info', 'nope'])).toMatchObject({ code: 1, stderr: `${JSON.stringify({ error: `pool 'nope' not found in ${home}` })}\n` });
    await expect(inProcessFails(home, ['pool', 'list'])).rejects.toThrow(/a refusal was expected|expected exit 1/);
    expect(await inProcessJson(home, ['pool', 'list'])).toEqual([]);
  });

  it('a usage error is exit 2; a home that is a file is refused before any command', async () => {
    expect((await inProcessRun(scratch.dir, ['pool', 'frobnicate'])).code).toBe(2);
    const file = path.join(scratch.dir, 'a-file');
    fs.writeFileSync(file, 'x');
    expect(await inProcessFails(file, ['pool', 'list'])).toBe(`home '${file}' is not a directory`);
  });

  it('a command that sets process.exitCode fails, and the test process keeps its own exit code', async () => {
    const home = path.join(scratch.dir, 'damaged');
    await inProcess(home, ['pool', 'create', 'p0', '--size', '64M']);
    // Zeroing the header makes the check report an unrepaired problem and set exit code 1.
    const fd = fs.openSync(path.join(home, 'p0.pool'), 'r+');
    fs.writeSync(fd, Buffer.alloc(4096), 0, 4096, 0);
    fs.closeSync(fd);
    const before = process.exitCode;
    const r = await inProcessRun(home, ['pool', 'check', 'p0']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^strata: pool 'p0' has \d+ unrepaired problems? \(try --repair\)\n$/);
    expect(process.exitCode).toBe(before);
    await expect(inProcess(home, ['pool', 'check', 'p0'])).rejects.toThrow(/unrepaired problem/);
  });
});
