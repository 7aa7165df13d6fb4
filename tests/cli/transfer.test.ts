import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { nonzeroBlocks, sparseImage } from './image.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { allocated, buildCli, repo } from './strata.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-transfer');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
let n = 0;
const file = (name: string): string => path.join(scratch.dir, `${n++}-${name}`);
async function poolHome(size = '1G'): Promise<string> {
  const home = path.join(scratch.dir, `home${n++}`);
  await inProcess(home, ['pool', 'create', 'p0', '--size', size]);
  return home;
}

interface ImportJson {
  created: boolean;
  fileSize: number;
  volumeSize: number;
  bytesWritten: number;
  zeroBytes: number;
}

const qemuImg = (args: string[]): { code: number; out: string } => {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`qemu-img is needed for this test (scripts/test-deps.sh installs it): ${r.error.message}`);
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
};

describe('strata import / export', () => {
  it('round-trips a sparse random image byte for byte, the pool and the exported file staying thin', async () => {
    const home = await poolHome();
    const size = (40 << 20) + 3 * 4096;
    const original = file('original.raw');
    sparseImage(original, size, 1234);
    const cluster = (await inProcessJson<{ clusterSize: number }>(home, ['pool', 'info', 'p0'])).clusterSize;
    const poolBefore = allocated(path.join(home, 'p0.pool'));

    const imported = await inProcessJson<ImportJson>(home, ['import', 'p0/disk', original]);
    expect(imported).toMatchObject({ format: 'raw', subformat: null, created: true, fileSize: size, volumeSize: size });
    const dataPages = nonzeroBlocks(original, 4096);
    expect(imported.bytesWritten).toBeLessThanOrEqual(dataPages);
    expect(imported.bytesWritten + imported.zeroBytes).toBe(size);
    // Zero runs were not written: the pool grew by the clusters holding data, plus metadata.
    const grown = allocated(path.join(home, 'p0.pool')) - poolBefore;
    expect(grown).toBeLessThanOrEqual(nonzeroBlocks(original, cluster) + (4 << 20));
    expect(grown).toBeLessThan(size * 0.75);

    const exported = file('exported.raw');
    expect(await inProcess(home, ['export', 'p0/disk', exported])).toMatch(/^exported p0\/disk to .*exported\.raw: 40M, [\d.]+M written, [\d.]+M left sparse\n$/);
    expect(fs.statSync(exported).size).toBe(size);
    expect(fs.readFileSync(exported).equals(fs.readFileSync(original))).toBe(true);
    expect(allocated(exported)).toBeLessThanOrEqual(dataPages + (1 << 20));
    expect(allocated(exported)).toBeLessThan(allocated(original));
    // A real tool agrees.
    const cmp = qemuImg(['compare', '-f', 'raw', '-F', 'raw', exported, original]);
    expect(cmp.out).toMatch(/Images are identical/);
    expect(cmp.code).toBe(0);
  });

  it('exports what qemu-img writes: a raw image made by qemu-io imports and compares identical (pool opened O_DIRECT)', async () => {
    const home = await poolHome();
    const original = file('qemu.raw');
    expect(qemuImg(['create', '-f', 'raw', original, '24M']).code).toBe(0);
    const io = spawnSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0xcd 1M 2M', '-c', 'write -P 0x00 5M 1M', '-c', 'write -P 0x5a 20971008 4096', original], { encoding: 'utf8' });
    expect(io.status).toBe(0);
    // Through O_DIRECT on the pool side, as a host that keeps its page cache for the guests would run it.
    await inProcess(home, ['import', 'p0/q', original, '--cache', 'none']);
    const exported = file('q-out.raw');
    await inProcess(home, ['export', 'p0/q', exported, '--cache', 'none']);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'raw', original, exported]).code).toBe(0);
    // qemu-img sees the exported file's holes too: only the written data is mapped as data.
    const map = JSON.parse(qemuImg(['map', '--output=json', '-f', 'raw', exported]).out) as { start: number; length: number; data: boolean }[];
    const data = map.filter((e) => e.data).reduce((s, e) => s + e.length, 0);
    expect(data).toBeGreaterThanOrEqual((2 << 20) + 4096);
    expect(data).toBeLessThanOrEqual((2 << 20) + 2 * 4096);
    // The switch reaches the file: O_DIRECT cannot serve a file that ends mid-sector, and says so.
    fs.truncateSync(path.join(home, 'p0.pool'), fs.statSync(path.join(home, 'p0.pool')).size + 100);
    expect(await inProcessFails(home, ['export', 'p0/q', file('never.raw'), '--cache', 'none'])).toMatch(/direct I\/O needs a size that is a multiple of 512 bytes/);
  });

  it('imports into an existing volume: old data under zero runs and holes of the image becomes zeroes', async () => {
    const home = await poolHome();
    const size = 16 << 20;
    const full = file('full.raw');
    fs.writeFileSync(full, Buffer.alloc(size, 0x77));
    await inProcess(home, ['import', 'p0/v', full]);
    const sparse = file('sparse.raw');
    sparseImage(sparse, size, 99, 1 << 20);
    expect(await inProcessFails(home, ['import', 'p0/v', sparse])).toBe('volume p0/v holds data; use --force to overwrite it');
    const r = await inProcessJson<ImportJson>(home, ['import', 'p0/v', sparse, '--force']);
    expect(r.created).toBe(false);
    const out = file('out.raw');
    await inProcess(home, ['export', 'p0/v', out]);
    expect(fs.readFileSync(out).equals(fs.readFileSync(sparse))).toBe(true);
  });

  it('creates the volume at --size, the rest reading as zeroes', async () => {
    const home = await poolHome();
    const small = file('small.raw');
    fs.writeFileSync(small, Buffer.alloc(1 << 20, 0x42));
    const r = await inProcessJson<ImportJson>(home, ['import', 'p0/big', small, '--size', '8M']);
    expect(r).toMatchObject({ created: true, volumeSize: 8 << 20, bytesWritten: 1 << 20 });
    const out = file('big.raw');
    expect(await inProcessJson(home, ['export', 'p0/big', out])).toEqual({ pool: 'p0', volume: 'big', file: out, size: 8 << 20, bytesWritten: 1 << 20, format: 'raw', subformat: null, fileSize: 8 << 20 });
    const back = fs.readFileSync(out);
    expect(back.length).toBe(8 << 20);
    expect(back.subarray(0, 1 << 20).every((b) => b === 0x42)).toBe(true);
    expect(back.subarray(1 << 20).every((b) => b === 0)).toBe(true);
    expect(await inProcess(home, ['import', 'p0/other', small])).toMatch(/^imported .*small\.raw into p0\/other \(created, 1M\): 1M read, 1M written, 0 of zeroes not written\n$/);
  });

  it('refuses what does not fit and names the file and volume', async () => {
    const home = await poolHome();
    const img = file('four.raw');
    fs.writeFileSync(img, Buffer.alloc(4 << 20, 1));
    await inProcess(home, ['volume', 'create', 'p0/small', '2M']);
    expect(await inProcessFails(home, ['import', 'p0/small', img])).toBe(`${img} (4M) does not fit in p0/small (2M)`);
    expect(await inProcessFails(home, ['import', 'p0/small', img, '--size', '8M'])).toBe(`volume p0/small exists with size 2M; --size 8M only applies when import creates it`);
    expect(await inProcessFails(home, ['import', 'p0/new', img, '--size', '1M'])).toBe(`--size 1M is smaller than ${img} (4M)`);
    expect(await inProcessFails(home, ['import', 'p0/new', path.join(scratch.dir, 'missing.raw')])).toBe(`cannot read ${path.join(scratch.dir, 'missing.raw')}: no such file`);
    expect(await inProcessFails(home, ['import', 'p0/new', scratch.dir])).toBe(`${scratch.dir} is not a regular file`);
    const empty = file('empty.raw');
    fs.writeFileSync(empty, '');
    expect(await inProcessFails(home, ['import', 'p0/new', empty])).toBe(`${empty} is empty: give --size to create p0/new`);
    expect(await inProcessFails(home, ['import', 'p9/new', img])).toBe(`pool 'p9' not found in ${home}`);
    expect((await inProcessJson<{ name: string }[]>(home, ['volume', 'list', 'p0'])).map((v) => v.name)).toEqual(['small']);
  });

  it('removes a volume it created when the import fails half-way (pool full)', async () => {
    const home = await poolHome('24M');
    const img = file('random.raw');
    sparseImage(img, 48 << 20, 7, 64 << 20);
    expect(await inProcessFails(home, ['import', 'p0/v', img])).toMatch(/^.*(space|ENOSPC|full)/i);
    expect(await inProcessJson(home, ['volume', 'list', 'p0'])).toEqual([]);
    await inProcess(home, ['pool', 'check', 'p0']);
  });

  it('an import killed half-way leaves a pool that opens, checks clean and serves read-only commands', async () => {
    const home = await poolHome('1G');
    const img = file('kill.raw');
    const fd = fs.openSync(img, 'w');
    fs.ftruncateSync(fd, 256 << 20);
    for (let i = 0; i < 64; i += 2) fs.writeSync(fd, randomBytes(4 << 20), 0, 4 << 20, i * (4 << 20));
    fs.closeSync(fd);
    const cli = path.join(repo, 'dist/bin/strata.js');
    const child = spawn(process.execPath, [cli, '--home', home, 'import', 'p0/v', img], { stdio: 'ignore' });
    const poolFile = path.join(home, 'p0.pool');
    const start = allocated(poolFile);
    // Kill it once it has written something, while it is still writing.
    while (child.exitCode === null && allocated(poolFile) < start + (16 << 20)) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(child.signalCode).toBe('SIGKILL');
    // A read-only command replays the journal left behind instead of refusing.
    expect((await inProcessJson<{ name: string }>(home, ['pool', 'info', 'p0'])).name).toBe('p0');
    expect((await inProcessJson<{ clean: boolean }>(home, ['pool', 'check', 'p0'])).clean).toBe(true);
    const volumes = (await inProcessJson<{ name: string }[]>(home, ['volume', 'list', 'p0'])).map((v) => v.name);
    if (volumes.includes('v')) await inProcess(home, ['map', 'p0/v']);
    await inProcess(home, ['import', 'p0/w', img]);
    const out = file('kill-out.raw');
    await inProcess(home, ['export', 'p0/w', out]);
    expect(fs.readFileSync(out).equals(fs.readFileSync(img))).toBe(true);
  });

  it('Ctrl-C stops an import cleanly: one line, the volume it created removed, the pool closed', async () => {
    const home = await poolHome();
    const img = file('endless.raw');
    // 64G of holes: reading them takes far longer than the signal takes to arrive.
    fs.closeSync(fs.openSync(img, 'w'));
    fs.truncateSync(img, 64 * 1024 ** 3);
    const cli = path.join(repo, 'dist/bin/strata.js');
    const child = spawn(process.execPath, [cli, '--home', home, 'import', 'p0/v', img, '--size', '64G'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Signalled once its import job runs: a fixed wait lost the race to a slow start on a loaded host (killed before it handled SIGINT).
    const running = async (): Promise<boolean> => (JSON.parse(await inProcess(home, ['--json', 'job', 'list', 'p0'])) as Array<{ kind: string; state: string }>).some((j) => j.kind === 'import' && j.state === 'running');
    for (let i = 0; i < 600 && child.exitCode === null && !(await running()); i++) await new Promise((r) => setTimeout(r, 100));
    child.kill('SIGINT');
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(1);
    expect(stderr).toBe('strata: interrupted\n');
    expect(await inProcessJson(home, ['volume', 'list', 'p0'])).toEqual([]);
    // Closed cleanly: a read-only open needs no journal replay.
    const dev = FileDevice.open(path.join(home, 'p0.pool'), { readOnly: true });
    try {
      const pool = await Pool.open(dev, { readOnly: true });
      await pool.close();
    } finally {
      await dev.close();
    }
  });

  it('export refuses to overwrite a file unless --force, and names missing volumes', async () => {
    const home = await poolHome();
    await inProcess(home, ['volume', 'create', 'p0/v', '1M']);
    const target = file('exists.raw');
    fs.writeFileSync(target, 'precious');
    expect(await inProcessFails(home, ['export', 'p0/v', target])).toBe(`${target} already exists (use --force to overwrite it)`);
    expect(fs.readFileSync(target, 'utf8')).toBe('precious');
    await inProcess(home, ['export', 'p0/v', target, '--force']);
    expect(fs.readFileSync(target)).toEqual(Buffer.alloc(1 << 20));
    expect(allocated(target)).toBe(0);
    expect(await inProcessFails(home, ['export', 'p0/nope', file('x.raw')])).toBe("volume, snapshot or template 'nope' not found in pool 'p0'");
    // --force never wipes a pool file: the one being read, another registered one, or one held by another process.
    const poolFile = path.join(home, 'p0.pool');
    const size = fs.statSync(poolFile).size;
    expect(await inProcessFails(home, ['export', 'p0/v', poolFile, '--force'])).toBe(`${poolFile} is the file of pool 'p0'; not overwriting it`);
    expect(fs.statSync(poolFile).size).toBe(size);
    const held = file('held.raw');
    fs.writeFileSync(held, 'held');
    const dev = FileDevice.open(held);
    try {
      expect(await inProcessFails(home, ['export', 'p0/v', held, '--force'])).toBe(`${held} is in use by another process; not overwriting it`);
    } finally {
      await dev.close();
    }
    expect(fs.readFileSync(held, 'utf8')).toBe('held');
    expect(await inProcessFails(home, ['export', 'p0/v', '/dev/null', '--force'])).toBe('/dev/null is not a regular file');
    await inProcess(home, ['pool', 'check', 'p0']);
    expect(await inProcessFails(home, ['export', 'p0/v', '/nonexistent-dir/x.raw'])).toBe('cannot write /nonexistent-dir/x.raw: no such file');
  });

  it('draws a progress bar on a terminal, and none in a pipe', async () => {
    const home = await poolHome();
    const img = file('progress.raw');
    fs.writeFileSync(img, randomBytes(64 << 20));
    const cli = path.join(repo, 'dist/bin/strata.js');
    // No waiting for the first second here (the delay itself is unit-tested): only the terminal decides.
    const env: NodeJS.ProcessEnv = { ...process.env, STRATA_PROGRESS_DELAY: '0' };
    delete env.STRATA_HOME;
    // `script` gives the command a terminal for stdout and stderr, and copies what it shows.
    const tty = spawnSync('script', ['-qec', `${process.execPath} ${cli} --home ${home} import p0/tty ${img}`, '/dev/null'], { encoding: 'utf8', env });
    expect(tty.status).toBe(0);
    expect(tty.stdout).toMatch(/\rimport p0\/tty \[#*\.*\]\s+\d+% [\d.]+[KMG]?\/s\x1b\[K/);
    // The bar erases itself before the result is printed.
    expect(tty.stdout).toMatch(/\r\x1b\[Kimported .* into p0\/tty/);
    const piped = spawnSync(process.execPath, [cli, '--home', home, 'import', 'p0/pipe', img], { encoding: 'utf8', env });
    expect(piped.status).toBe(0);
    expect(piped.stderr).toBe('');
    expect(piped.stdout).toMatch(/^imported .* into p0\/pipe/);
  });

});
