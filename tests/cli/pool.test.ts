import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { inProcess, inProcessFails, inProcessJson, inProcessRun } from './in-process.js';
import { allocated, buildCli, ok, strata } from './strata.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-pool');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
let n = 0;
const freshHome = (): string => path.join(scratch.dir, `home${n++}`);

interface PoolJson {
  name: string;
  backing: { kind: string; path: string };
  deviceSize: number;
  clusterSize: number;
  volumes: number;
  usedBytes: number;
  freeBytes: number;
  totalBytes: number;
  hostAllocatedBytes: number;
  error?: string;
}

describe('strata pool', () => {
  it('creates a 100G sparse pool at HOME/POOL.pool by default and registers it', async () => {
    const home = freshHome();
    const out = await inProcess(home, ['pool', 'create', 'pool0']);
    const file = path.join(home, 'pool0.pool');
    expect(out).toBe(`created pool 'pool0': 100G at ${file} (cluster size 64K)\n`);
    expect(fs.statSync(file).size).toBe(100 * 1024 ** 3);
    // Sparse but for its 64M journal, which takes host space at creation (README, Reliability).
    expect(allocated(file)).toBeLessThan(72 << 20);
    const record = JSON.parse(fs.readFileSync(path.join(home, 'pools', 'pool0.json'), 'utf8')) as { name: string; backing: unknown };
    expect(record.name).toBe('pool0');
    expect(record.backing).toEqual({ kind: 'file', path: 'pool0.pool' });
  });

  it('takes --size, --path and --cluster-size, and reports them as JSON', async () => {
    const home = freshHome();
    const file = path.join(scratch.dir, `elsewhere${n}.img`);
    const p = await inProcessJson<PoolJson>(home, ['pool', 'create', 'p1', '--size', '2G', '--path', file, '--cluster-size', '128K']);
    expect(p).toMatchObject({ name: 'p1', backing: { kind: 'file', path: file }, deviceSize: 2 * 1024 ** 3, clusterSize: 128 * 1024, volumes: 0 });
    expect(p.totalBytes).toBeGreaterThan(0);
    expect(p.totalBytes).toBeLessThanOrEqual(p.deviceSize);
    expect(p.freeBytes + p.usedBytes).toBe(p.totalBytes);
    expect(fs.statSync(file).size).toBe(2 * 1024 ** 3);
  });

  it('lists pools aligned for people and as JSON for scripts', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'alpha', '--size', '1G']);
    await inProcess(home, ['pool', 'create', 'a-much-longer-name', '--size', '10G']);
    const lines = (await inProcess(home, ['pool', 'list'])).trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^NAME\s+SIZE\s+USED\s+FREE\s+PROVISIONED\s+VOLUMES\s+STATE\s+BACKING$/);
    expect(lines[1]).toMatch(/^a-much-longer-name\s+10G\s+\S+\s+\S+\s+0 \(0\.0%\)\s+0\s+optimal\s+\/.*a-much-longer-name\.pool$/);
    expect(lines[2]).toMatch(/^alpha\s+1G\s/);
    // Columns line up: every row has its BACKING at the header's column.
    const col = lines[0]!.indexOf('BACKING');
    for (const l of lines.slice(1)) expect(l[col - 1]).toBe(' ');
    for (const l of lines.slice(1)) expect(l.slice(col)).toMatch(/^\//);
    const list = await inProcessJson<PoolJson[]>(home, ['pool', 'list']);
    expect(list.map((p) => [p.name, p.deviceSize])).toEqual([
      ['a-much-longer-name', 10 * 1024 ** 3],
      ['alpha', 1024 ** 3],
    ]);
  });

  it('lists an empty home, and a pool it cannot open without hiding the others', async () => {
    const home = freshHome();
    expect(await inProcess(home, ['pool', 'list'])).toBe(`no pools in ${home}\n`);
    expect(await inProcessJson(home, ['pool', 'list'])).toEqual([]);
    await inProcess(home, ['pool', 'create', 'good', '--size', '1G']);
    await inProcess(home, ['pool', 'create', 'gone', '--size', '1G']);
    fs.rmSync(path.join(home, 'gone.pool'));
    const list = await inProcessJson<PoolJson[]>(home, ['pool', 'list']);
    expect(list.find((p) => p.name === 'good')?.deviceSize).toBe(1024 ** 3);
    expect(list.find((p) => p.name === 'gone')?.error).toMatch(/gone\.pool is missing/);
    expect(await inProcess(home, ['pool', 'list'])).toMatch(/^gone\s+-\s+-\s+-\s+-\s+-\s+-\s+\/.*is missing/m);
    fs.writeFileSync(path.join(home, 'pools', 'mangled.json'), '{"version": 1, "name": "mangled", "backing": 7}');
    const again = await inProcessJson<PoolJson[]>(home, ['pool', 'list']);
    expect(again.map((p) => p.name)).toEqual(['gone', 'good', 'mangled']);
    expect(again[2]!.error).toMatch(/registration .*mangled\.json is damaged \(no valid backing\)/);
    expect(await inProcessFails(home, ['pool', 'info', 'mangled'])).toMatch(/^pool 'mangled': registration .* is damaged/);
  });

  it('shows one pool with sizes in bytes and units', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p0', '--size', '4G']);
    const out = await inProcess(home, ['pool', 'info', 'p0']);
    expect(out).toMatch(/^name:\s+p0$/m);
    expect(out).toMatch(/^device size:\s+4G \(4294967296 bytes\)$/m);
    expect(out).toMatch(/^cluster size:\s+64K$/m);
    expect(out).toMatch(/^volumes:\s+0$/m);
    expect(out).toMatch(/^uuid:\s+[0-9a-f-]{32,36}$/m);
    const p = await inProcessJson<PoolJson>(home, ['pool', 'info', 'p0']);
    expect(p.hostAllocatedBytes).toBe(allocated(path.join(home, 'p0.pool')));
  });

  it('reads the home from STRATA_HOME, and from ./strata-data without either', async () => {
    const home = freshHome();
    ok(null, ['pool', 'create', 'envpool', '--size', '1G'], { env: { STRATA_HOME: home } });
    expect(fs.existsSync(path.join(home, 'pools', 'envpool.json'))).toBe(true);
    const cwd = freshHome();
    fs.mkdirSync(cwd);
    ok(null, ['pool', 'create', 'here', '--size', '1G'], { cwd });
    expect(fs.existsSync(path.join(cwd, 'strata-data', 'here.pool'))).toBe(true);
    expect(ok(null, ['pool', 'list'], { cwd })).toMatch(/^here\s/m);
    // Set but empty is the default too, not the working directory.
    expect(ok(null, ['pool', 'list'], { cwd, env: { STRATA_HOME: '' } })).toMatch(/^here\s/m);
  });

  it('names what is wrong in one line: unknown pool, duplicate, bad name, bad size, taken path', async () => {
    const home = freshHome();
    expect(await inProcessFails(home, ['pool', 'info', 'p9'])).toBe(`pool 'p9' not found in ${home}`);
    expect(await inProcessFails(home, ['pool', 'check', 'p9'])).toBe(`pool 'p9' not found in ${home}`);
    expect(await inProcessFails(home, ['pool', 'delete', 'p9'])).toBe(`pool 'p9' not found in ${home}`);
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    expect(await inProcessFails(home, ['pool', 'create', 'p0'])).toBe(`pool 'p0' already exists in ${home}`);
    expect(await inProcessFails(home, ['pool', 'create', '../evil'])).toMatch(/^invalid pool name '\.\.\/evil'/);
    expect(await inProcessFails(home, ['pool', 'create', 'p1', '--size', 'lots'])).toMatch(/^invalid size 'lots'/);
    expect(await inProcessFails(home, ['pool', 'create', 'p1', '--path', path.join(home, 'p0.pool')])).toMatch(/p0\.pool already exists/);
    expect(await inProcessFails(home, ['pool', 'create', 'p1', '--path', '/nonexistent-dir/x.pool'])).toBe('directory /nonexistent-dir does not exist');
    expect(await inProcessFails(home, ['pool', 'create', 'p1', '--cluster-size', '3K'])).toMatch(/^cannot create pool 'p1': .*/);
    // A refused create leaves nothing behind.
    expect(fs.existsSync(path.join(home, 'p1.pool'))).toBe(false);
    expect((await inProcessJson<PoolJson[]>(home, ['pool', 'list'])).map((p) => p.name)).toEqual(['p0']);
  });

  it('creates a pool on a RAID array, keeps working with a member gone, and deletes its members', async () => {
    const home = freshHome();
    const dir = fs.mkdtempSync(path.join(scratch.dir, 'raid-'));
    const m = [1, 2, 3, 4].map((i) => path.join(dir, `m${i}`));
    expect(await inProcess(home, ['pool', 'create', 'r', '--size', '256M', '--raid', '5', '--members', m.join(','), '--chunk', '64K'])).toMatch(/^created pool 'r': 256M on RAID 5 over 4 members/);
    await inProcess(home, ['volume', 'create', 'r/v', '64M']);
    expect(await inProcess(home, ['raid', 'status', 'r'])).toMatch(/state optimal/);
    fs.renameSync(m[1]!, `${m[1]}.gone`);
    const degraded = await inProcessRun(home, ['volume', 'info', 'r/v']);
    expect(degraded.code).toBe(0);
    expect(degraded.stderr).toMatch(/degraded/);
    fs.renameSync(`${m[1]}.gone`, m[1]!);
    expect(await inProcess(home, ['pool', 'delete', 'r', '--force'])).toMatch(/removed its 4 RAID members/);
    for (const f of m) expect(fs.existsSync(f)).toBe(false);
    expect(await inProcessFails(home, ['pool', 'create', 'r', '--raid', '1'])).toBe('--raid 1 needs --members FILE,FILE,…');
    expect(await inProcessFails(home, ['pool', 'create', 'r', '--members', m[0]!])).toBe('--members goes with --raid LEVEL');
    const usage = strata(home, ['pool', 'create', 'r', '--raid', '4', '--members', m[0]!]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--raid.*4.*invalid|Allowed choices/);
  });

  it('exits 2 on usage errors', async () => {
    const home = freshHome();
    expect(strata(home, ['pool', 'create']).code).toBe(2);
    expect(strata(home, ['pool', 'frobnicate']).code).toBe(2);
    expect(strata(home, ['pool', 'list', '--bogus']).code).toBe(2);
  });

  it('checks a clean pool: exit 0, no problems', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    await inProcess(home, ['volume', 'create', 'p0/v', '16M']);
    expect(await inProcess(home, ['pool', 'check', 'p0'])).toMatch(/^pool 'p0': \d+ clusters checked, 0 problems, 0 leaked clusters, 0 corrupt blocks$/m);
    const report = await inProcessJson<{ clean: boolean; problems: unknown[] }>(home, ['pool', 'check', 'p0']);
    expect(report.clean).toBe(true);
    expect(report.problems).toEqual([]);
    // Past the host page cache too; the switch reaches the file: O_DIRECT refuses a file that ends mid-sector.
    expect(await inProcess(home, ['pool', 'check', 'p0', '--cache', 'none'])).toMatch(/0 problems/);
    const file = path.join(home, 'p0.pool');
    fs.truncateSync(file, fs.statSync(file).size + 100);
    expect(await inProcessFails(home, ['pool', 'check', 'p0', '--cache', 'none'])).toMatch(/direct I\/O needs a size that is a multiple of 512 bytes/);
  });

  it('checks a pool with a corrupted data cluster: names the place and exits 1, with or without --repair', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p0', '--size', '256M']);
    await inProcess(home, ['volume', 'create', 'p0/v', '16M']);
    const image = path.join(home, 'pattern.raw');
    const pattern = Buffer.alloc(1 << 20);
    for (let i = 0; i < pattern.length; i += 16) pattern.write('STRATA-CHECK-ME!', i, 'latin1');
    fs.writeFileSync(image, pattern);
    await inProcess(home, ['import', 'p0/v', image]);
    // Find the data on the pool file and damage it behind the pool's back.
    const poolFile = path.join(home, 'p0.pool');
    const fd = fs.openSync(poolFile, 'r+');
    const buf = Buffer.alloc(1 << 20);
    let at = -1;
    for (let off = 0; at < 0 && off < fs.statSync(poolFile).size; off += buf.length) {
      fs.readSync(fd, buf, 0, buf.length, off);
      const i = buf.indexOf('STRATA-CHECK-ME!', 0, 'latin1');
      if (i >= 0) at = off + i;
    }
    expect(at).toBeGreaterThanOrEqual(0);
    fs.writeSync(fd, Buffer.from('garbage!'), 0, 8, at + 4096);
    fs.closeSync(fd);

    const r = strata(home, ['pool', 'check', 'p0']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^PROBLEM\s+WHERE\s+STATE\s+DETAIL$/m);
    expect(r.stdout).toMatch(/^checksum\s+.*host offset \d+.*\s+open\s+/m);
    expect(r.stderr).toMatch(/^strata: pool 'p0' has \d+ unrepaired problems? \(try --repair\)\n$/);
    const report = JSON.parse((await inProcessRun(home, ['--json', 'pool', 'check', 'p0'])).stdout) as { clean: boolean; problems: { kind: string; hostOffset?: number }[] };
    expect(report.clean).toBe(false);
    expect(report.problems.some((p) => p.kind === 'checksum')).toBe(true);
    // No redundancy under a file pool: the damaged data cannot be repaired without guessing.
    const repaired = strata(home, ['pool', 'check', 'p0', '--repair']);
    expect(repaired.code).toBe(1);
    expect(repaired.stderr).toMatch(/unrepaired/);
    // An export that meets the bad data fails in one line and leaves no wrong image behind.
    const out = path.join(home, 'out.raw');
    expect(await inProcessFails(home, ['export', 'p0/v', out])).toMatch(/checksum mismatch .* volume 'v'/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('deletes a pool only when empty unless --force, removing file and registration', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    await inProcess(home, ['volume', 'create', 'p0/a', '1M']);
    await inProcess(home, ['volume', 'create', 'p0/b', '1M']);
    expect(await inProcessFails(home, ['pool', 'delete', 'p0'])).toBe("pool 'p0' holds 2 volumes (a, b); use --force to delete it with them");
    expect(fs.existsSync(path.join(home, 'p0.pool'))).toBe(true);
    expect(await inProcessJson(home, ['pool', 'delete', 'p0', '--force'])).toEqual({ deleted: 'p0', path: path.join(home, 'p0.pool'), kept: null });
    expect(fs.existsSync(path.join(home, 'p0.pool'))).toBe(false);
    expect(fs.existsSync(path.join(home, 'pools', 'p0.json'))).toBe(false);
    await inProcess(home, ['pool', 'create', 'empty', '--size', '1G']);
    expect(await inProcess(home, ['pool', 'delete', 'empty'])).toBe(`deleted pool 'empty' (removed ${path.join(home, 'empty.pool')})\n`);
  });

  it('deletes the registration of a pool whose file is gone only with --force', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    fs.rmSync(path.join(home, 'p0.pool'));
    expect(await inProcessFails(home, ['pool', 'delete', 'p0'])).toMatch(/p0\.pool is missing/);
    expect(await inProcess(home, ['pool', 'delete', 'p0', '--force'])).toBe("deleted pool 'p0' from the registry (its file was already gone)\n");
    expect(await inProcessJson(home, ['pool', 'list'])).toEqual([]);
  });

  it('delete --force never removes a file that does not open as a pool, and clears a damaged registration', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    // The registration now points at a file that is not a pool.
    const precious = path.join(home, 'precious.txt');
    fs.writeFileSync(precious, 'not a pool');
    fs.writeFileSync(path.join(home, 'pools', 'p0.json'), JSON.stringify({ version: 1, name: 'p0', backing: { kind: 'file', path: precious }, created: 'x' }));
    expect(await inProcessFails(home, ['pool', 'delete', 'p0'])).toMatch(/^pool 'p0': .*not a Strata pool/);
    expect(await inProcess(home, ['pool', 'delete', 'p0', '--force'])).toBe(`deleted pool 'p0' from the registry; left ${precious} in place (it does not open as a pool)\n`);
    expect(fs.readFileSync(precious, 'utf8')).toBe('not a pool');
    fs.writeFileSync(path.join(home, 'pools', 'bad.json'), 'garbage');
    expect(await inProcessFails(home, ['pool', 'delete', 'bad'])).toMatch(/registration .* is damaged/);
    expect(await inProcessJson(home, ['pool', 'delete', 'bad', '--force'])).toEqual({ deleted: 'bad', path: null, kept: null });
    expect(await inProcessJson(home, ['pool', 'list'])).toEqual([]);
  });

  it('never touches a pool another process holds, not even with --force', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    const held = FileDevice.open(path.join(home, 'p0.pool'));
    try {
      const busy = `pool 'p0' is in use by another process (${path.join(home, 'p0.pool')} is locked)`;
      expect(await inProcessFails(home, ['pool', 'info', 'p0'])).toBe(busy);
      expect(await inProcessFails(home, ['volume', 'create', 'p0/v', '1M'])).toBe(busy);
      expect(await inProcessFails(home, ['pool', 'delete', 'p0', '--force'])).toBe(busy);
      expect(fs.existsSync(path.join(home, 'p0.pool'))).toBe(true);
    } finally {
      await held.close();
    }
    await inProcess(home, ['pool', 'info', 'p0']);
  });

  it('read-only commands replay the journal of a pool that was not closed cleanly', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    const file = path.join(home, 'p0.pool');
    // A writer commits to the journal and stops without its closing checkpoint.
    const dev = FileDevice.open(file);
    const pool = await Pool.open(dev);
    await pool.createVolume('v', 1 << 20);
    const vol = await pool.openVolume('v');
    await vol.write(Buffer.alloc(4096, 7), 0);
    await vol.flush();
    await pool.flush();
    await dev.close();
    const ro = FileDevice.open(file, { readOnly: true });
    await expect(Pool.open(ro, { readOnly: true })).rejects.toMatchObject({ code: 'EBUSY' });
    await ro.close();
    expect((await inProcessJson<{ name: string; allocatedBytes: number }[]>(home, ['volume', 'list', 'p0'])).map((v) => [v.name, v.allocatedBytes])).toEqual([['v', 4096]]);
    const again = FileDevice.open(file, { readOnly: true });
    const clean = await Pool.open(again, { readOnly: true });
    await clean.close();
  });

  it('opens a pool whose first 4K are overwritten from the header copy at the end, and reports it in one line once that is gone too', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p0', '--size', '1G']);
    const file = path.join(home, 'p0.pool');
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(4096, 0xee), 0, 4096, 0);
    await inProcess(home, ['pool', 'info', 'p0']);
    // A check without --repair opens read-only: it reports the damage and writes nothing.
    const r = strata(home, ['pool', 'check', 'p0']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^header\s+host offset 0\s+open\s+pool header at offset 0 is damaged \(checksum mismatch\); read from a copy$/m);
    expect((await inProcessRun(home, ['pool', 'check', 'p0', '--repair'])).stdout).toMatch(/^header\s+host offset 0\s+repaired\s+pool header at offset 0 is damaged \(checksum mismatch\); rewritten$/m);
    expect(await inProcess(home, ['pool', 'check', 'p0'])).toMatch(/ 0 problems/);
    fs.writeSync(fd, Buffer.alloc(4096, 0xee), 0, 4096, 0);
    fs.writeSync(fd, Buffer.alloc(512, 0xee), 0, 512, fs.statSync(file).size - 512);
    fs.closeSync(fd);
    expect(await inProcessFails(home, ['pool', 'info', 'p0'])).toMatch(/^pool 'p0': /);
  });

  it('check --repair holds the clusters of a damaged L2 table in quarantine and says so', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p0', '--size', '256M']);
    await inProcess(home, ['volume', 'create', 'p0/v', '16M']);
    await inProcess(home, ['volume', 'create', 'p0/w', '16M']);
    const image = path.join(home, 'data.raw');
    fs.writeFileSync(image, Buffer.alloc(1 << 20, 0x42));
    await inProcess(home, ['import', 'p0/v', image]);
    await inProcess(home, ['import', 'p0/w', image]);
    // The first L2 table on the file (v's) gets one byte flipped.
    const file = path.join(home, 'p0.pool');
    const fd = fs.openSync(file, 'r+');
    const C = 65536;
    const tag = Buffer.alloc(4);
    let l2 = -1;
    for (let c = 0; l2 < 0 && c < fs.statSync(file).size / C; c++) {
      fs.readSync(fd, tag, 0, 4, c * C + C - 16);
      if (tag.toString('latin1') === 'L2  ') l2 = c * C;
    }
    expect(l2).toBeGreaterThan(0);
    fs.writeSync(fd, Buffer.from([0x5a]), 0, 1, l2 + 17);
    fs.closeSync(fd);
    const r = strata(home, ['pool', 'check', 'p0', '--repair']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`^quarantine\\s+host offset ${l2}\\s+open\\s+16 clusters held in quarantine because L2 table at offset ${l2} \\(volume 'v' \\(layer 1\\), virtual offset 0\\) is damaged: clusters [\\d, -]+$`, 'm'));
    expect(r.stdout).toMatch(/, 16 clusters held in quarantine, /);
    // The other volume exports whole; the held clusters stay held on the next check.
    const out = path.join(home, 'w.raw');
    await inProcess(home, ['export', 'p0/w', out]);
    expect(fs.readFileSync(out).subarray(0, 1 << 20).equals(fs.readFileSync(image))).toBe(true);
    expect((await inProcessRun(home, ['pool', 'check', 'p0', '--repair'])).stdout).toMatch(/16 clusters held in quarantine because L2 table/);
  });
});
