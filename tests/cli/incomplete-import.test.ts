import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { allocated, buildCli, repo } from './strata.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-incomplete');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
const cli = path.join(repo, 'dist/bin/strata.js');
let n = 0;
const file = (name: string): string => path.join(scratch.dir, `${n++}-${name}`);

interface VolumeJson {
  name: string;
  incomplete: boolean;
  size: number;
}

const ADVICE = 'its import did not finish (run the import again to complete it, or delete the volume)';

/** 96M with random data in every other 4M: long enough to be killed midway, quick to write. */
function image(size = 96 << 20): string {
  const img = file('image.raw');
  const fd = fs.openSync(img, 'w');
  fs.ftruncateSync(fd, size);
  for (let at = 0; at < size; at += 8 << 20) fs.writeSync(fd, randomBytes(Math.min(4 << 20, size - at)), 0, Math.min(4 << 20, size - at), at);
  fs.closeSync(fd);
  return img;
}

/** Starts `strata import` and SIGKILLs it once the pool file has grown by 8M, while it is still copying. */
async function killedImport(home: string, ref: string, img: string): Promise<void> {
  const child = spawn(process.execPath, [cli, '--home', home, 'import', ref, img], { stdio: 'ignore' });
  const poolFile = path.join(home, 'p0.pool');
  const start = allocated(poolFile);
  while (child.exitCode === null && allocated(poolFile) < start + (8 << 20)) await new Promise((r) => setTimeout(r, 5));
  if (child.exitCode !== null) throw new Error('the import finished before it could be killed');
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  expect(child.signalCode).toBe('SIGKILL');
}

describe('an import that did not finish', () => {
  it('killed with SIGKILL, leaves its volume marked incomplete; export and serve refuse it; a re-import completes it', async () => {
    const home = file('home');
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    await inProcess(home, ['volume', 'create', 'p0/w', '1M']);
    const img = image();
    await killedImport(home, 'p0/v', img);

    // Listed and shown as incomplete, in JSON and for people.
    expect((await inProcessJson<VolumeJson[]>(home, ['volume', 'list', 'p0'])).map((v) => [v.name, v.incomplete])).toEqual([['v', true], ['w', false]]);
    expect(await inProcess(home, ['volume', 'list', 'p0'])).toMatch(/^NAME +SIZE +ALLOCATED +LAYERS +MODE +STATE +CREATED\nv +96M +\S+ +1 +rw +incomplete +\S+ \S+\nw +1M +0 +1 +rw +ready +/);
    expect((await inProcessJson<VolumeJson>(home, ['volume', 'info', 'p0/v'])).incomplete).toBe(true);
    expect(await inProcess(home, ['volume', 'info', 'p0/v'])).toContain(`\nstate:     incomplete: ${ADVICE}\n`);

    // Export refuses it unless told, and leaves no file.
    const out = file('out.raw');
    expect(await inProcessFails(home, ['export', 'p0/v', out])).toBe(`volume 'p0/v' is incomplete: ${ADVICE}; --allow-incomplete exports what it holds`);
    expect(fs.existsSync(out)).toBe(false);
    await inProcess(home, ['export', 'p0/v', out, '--allow-incomplete']);
    expect(fs.statSync(out).size).toBe(96 << 20);

    // Serve refuses it by name, and serving the pool leaves it out with a warning.
    expect(await inProcessFails(home, ['serve', 'p0', '--export', 'v', '--listen', '127.0.0.1:0'])).toBe(`volume 'p0/v' is incomplete: ${ADVICE}; --allow-incomplete serves what it holds`);
    const server = spawn(process.execPath, [cli, '--home', home, 'serve', 'p0', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    server.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    server.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    while (!stdout.includes('qemu-system') && server.exitCode === null) await new Promise((r) => setTimeout(r, 20));
    server.kill('SIGTERM');
    expect(await new Promise((r) => server.once('exit', r))).toBe(0);
    expect(stdout).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/w\n/);
    expect(stderr).toBe('strata serve: not serving p0/v: it is incomplete, its import did not finish (--allow-incomplete serves it)\n');

    // Importing again starts it over and completes it.
    const again = await inProcessJson<{ created: boolean; replacedIncomplete: boolean; volumeSize: number }>(home, ['import', 'p0/v', img]);
    expect(again).toMatchObject({ created: true, replacedIncomplete: true, volumeSize: 96 << 20 });
    expect((await inProcessJson<VolumeJson>(home, ['volume', 'info', 'p0/v'])).incomplete).toBe(false);
    await inProcess(home, ['export', 'p0/v', out, '--force']);
    expect(fs.readFileSync(out).equals(fs.readFileSync(img))).toBe(true);
    expect((await inProcessJson<{ clean: boolean }>(home, ['pool', 'check', 'p0'])).clean).toBe(true);
  });

  it('an incomplete volume can be deleted, and a plain import of an existing volume never marks it', async () => {
    const home = file('home');
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    // Marked as a killed import leaves it (the test above kills one), without the wait.
    const dev = FileDevice.open(path.join(home, 'p0.pool'));
    const pool = await Pool.open(dev);
    await pool.createVolume('v', 8 << 20, { incomplete: true });
    await pool.close();
    expect((await inProcessJson<VolumeJson>(home, ['volume', 'info', 'p0/v'])).incomplete).toBe(true);
    await inProcess(home, ['volume', 'delete', 'p0/v']);
    expect(await inProcessJson(home, ['volume', 'list', 'p0'])).toEqual([]);
    await inProcess(home, ['volume', 'create', 'p0/x', '2M']);
    expect((await inProcessJson<{ created: boolean }>(home, ['import', 'p0/x', image(1 << 20)])).created).toBe(false);
    expect((await inProcessJson<VolumeJson>(home, ['volume', 'info', 'p0/x'])).incomplete).toBe(false);
  });

  it('SIGTERM mid-import removes the volume it created and closes the pool', async () => {
    const home = file('home');
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    const img = file('endless.raw');
    // 64G of holes: reading them takes far longer than the signal takes to arrive.
    fs.closeSync(fs.openSync(img, 'w'));
    fs.truncateSync(img, 64 * 1024 ** 3);
    const poolFile = path.join(home, 'p0.pool');
    const start = allocated(poolFile);
    const child = spawn(process.execPath, [cli, '--home', home, 'import', 'p0/v', img], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // The pool is locked while the import runs, so nothing can ask it how far it is; the pool file growing
    // (the new volume's catalog and journal) says the import is under way, its signal handlers in place.
    while (child.exitCode === null && allocated(poolFile) === start) await new Promise((r) => setTimeout(r, 10));
    child.kill('SIGTERM');
    expect(await new Promise((r) => child.once('exit', r))).toBe(1);
    expect(stderr).toBe('strata: interrupted\n');
    expect(await inProcessJson(home, ['volume', 'list', 'p0'])).toEqual([]);
  });
});
