import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServe } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessFails, inProcessJson, inProcessRun } from './in-process.js';
import { buildCli, strata } from './strata.js';

const scratch = scratchDir('cli-pool-admin');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
let n = 0;
const GIB = 1024 ** 3;
const freshHome = (): string => path.join(scratch.dir, `home${n++}`);
const file = (name: string): string => path.join(scratch.dir, `${name}-${n}`);

interface Summary {
  name: string;
  state: string;
  deviceSize: number;
  provisionedBytes: number;
  capacityBytes: number;
  allocatedBytes: number;
  freeBytes: number;
  overcommitted: boolean;
  volumes: number;
}

describe('health and space at a glance', () => {
  it('pool list and pool info show state and provisioned space; create and resize warn when they overcommit', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p', '--size', '1G']);
    await inProcess(home, ['volume', 'create', 'p/a', '600M']);
    let info = await inProcessJson<Summary>(home, ['pool', 'info', 'p']);
    expect(info).toMatchObject({ state: 'optimal', provisionedBytes: 600 << 20, overcommitted: false });
    expect(info.capacityBytes).toBeGreaterThan(1000 << 20);
    expect(info.allocatedBytes + info.freeBytes).toBe(info.capacityBytes);

    // Thin pools may promise more than they hold; the admin is told, as LVM-thin does.
    const r = strata(home, ['volume', 'create', 'p/b', '600M']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('created volume p/b: 600M\n');
    expect(r.stderr).toMatch(/^strata: warning: pool 'p' is overcommitted: its volumes total 1\.17G over 1G/);
    const created = await inProcessJson<{ warnings: string[] }>(home, ['volume', 'create', 'p/c', '1M']);
    expect(created.warnings).toHaveLength(1);
    const grown = await inProcessJson<{ warnings: string[]; size: number }>(home, ['volume', 'resize', 'p/c', '+1M']);
    expect(grown.warnings[0]).toMatch(/overcommitted/);
    // A shrink never warns.
    expect((await inProcessJson<{ warnings: string[] }>(home, ['volume', 'resize', 'p/c', '1M'])).warnings).toEqual([]);

    info = await inProcessJson<Summary>(home, ['pool', 'info', 'p']);
    expect(info).toMatchObject({ provisionedBytes: (1201 << 20), overcommitted: true });
    const human = await inProcess(home, ['pool', 'info', 'p']);
    expect(human).toMatch(/^state: +optimal$/m);
    expect(human).toMatch(/^provisioned: +1\.17G \(1259339776 bytes\), 11\d\.\d% of capacity \(overcommitted\)$/m);
    const lines = (await inProcess(home, ['pool', 'list'])).trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+SIZE\s+USED\s+FREE\s+PROVISIONED\s+VOLUMES\s+STATE\s+BACKING$/);
    expect(lines[1]).toMatch(/^p\s+1G\s+\S+\s+\S+\s+1\.17G \(11\d\.\d%\)\s+3\s+optimal\s+\//);
    expect((await inProcessJson<Summary[]>(home, ['pool', 'list']))[0]).toMatchObject({ name: 'p', state: 'optimal', overcommitted: true });
  });

  it('a RAID pool with a failed member reads degraded', async () => {
    const home = freshHome();
    const m = [file('d1'), file('d2')];
    await inProcess(home, ['pool', 'create', 'r', '--raid', '1', '--members', m.join(','), '--size', '64M']);
    expect((await inProcessJson<Summary>(home, ['pool', 'info', 'r'])).state).toBe('optimal');
    await inProcessRun(home, ['raid', 'fail', '--pool', 'r', m[1]!]);
    const r = await inProcessRun(home, ['--json', 'pool', 'info', 'r']);
    expect((JSON.parse(r.stdout) as Summary).state).toBe('degraded');
  });
});

describe('pool import and raid examine', () => {
  it('registers a pool file whose registration was lost, and refuses what it must not register', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p', '--size', '256M']);
    await inProcess(home, ['volume', 'create', 'p/vm1', '10M']);
    const pool = path.join(home, 'p.pool');
    fs.rmSync(path.join(home, 'pools', 'p.json'));
    expect(await inProcessFails(home, ['volume', 'list', 'p'])).toMatch(/pool 'p' not found/);

    expect(await inProcess(home, ['pool', 'import', 'back', pool])).toBe(`imported pool 'back': 256M at ${pool}, 1 volume, optimal\n`);
    expect((await inProcessJson<Array<{ name: string }>>(home, ['volume', 'list', 'back'])).map((v) => v.name)).toEqual(['vm1']);
    expect(await inProcessFails(home, ['pool', 'import', 'again', pool])).toBe(`cannot import ${pool}: it is already registered as pool 'back'`);

    const junk = file('junk');
    fs.writeFileSync(junk, Buffer.alloc(1 << 20, 7));
    expect(await inProcessFails(home, ['pool', 'import', 'j', junk])).toMatch(/^cannot import .*: .* is not a Strata pool/);
    expect(fs.existsSync(path.join(home, 'pools', 'j.json'))).toBe(false);
    expect(await inProcessFails(home, ['pool', 'import', 'x', file('missing')])).toMatch(/no such file/);
  });

  it('finds RAID members by their superblocks, lists them, imports the array; examine prints a member and a released one', async () => {
    const home = freshHome();
    const dir = path.join(scratch.dir, `members${n}`);
    fs.mkdirSync(dir);
    const m = ['a', 'b', 'c'].map((x) => path.join(dir, x));
    await inProcess(home, ['pool', 'create', 'r', '--raid', '5', '--members', m.join(','), '--size', '64M']);
    await inProcess(home, ['volume', 'create', 'r/v', '8M']);
    fs.writeFileSync(path.join(dir, 'not-a-member'), Buffer.alloc(128 << 10));

    const ex = await inProcessJson<{ arrayUuid: string; level: number; role: number; state: string; events: number; members: number; arraySize: number; bitmap: { dirtyRegions: number } }>(home, ['raid', 'examine', m[1]!]);
    expect(ex).toMatchObject({ level: 5, role: 1, state: 'active', members: 3, arraySize: 64 << 20, bitmap: { dirtyRegions: 0 } });
    const human = await inProcess(home, ['raid', 'examine', m[0]!]);
    expect(human).toContain(`array uuid:  ${ex.arrayUuid}`);
    expect(human).toMatch(/^state: +active$/m);
    expect(await inProcessFails(home, ['raid', 'examine', path.join(dir, 'not-a-member')])).toMatch(/holds no Strata RAID superblock/);

    // Listed while registered; importable once the registration is gone.
    expect(await inProcess(home, ['pool', 'import', '--scan', dir])).toContain(`array ${ex.arrayUuid} (r): RAID 5, 64M, 3 of 3 members present; registered as pool 'r'`);
    expect(await inProcessFails(home, ['pool', 'import', 'x', m[0]!])).toBe(`cannot import ${m[0]}: it is already registered as pool 'r'`);
    fs.rmSync(path.join(home, 'pools', 'r.json'));
    expect(await inProcessFails(home, ['pool', 'import', 'x', m[0]!])).toMatch(/is a member of RAID 5 array .*; import the array it belongs to \(from its members\) instead/);
    const found = await inProcessJson<Array<{ uuid: string; registeredAs: string | null; found: unknown[] }>>(home, ['pool', 'import', '--scan', dir]);
    expect(found).toMatchObject([{ uuid: ex.arrayUuid, registeredAs: null }]);
    expect(found[0]!.found).toHaveLength(3);
    expect(await inProcess(home, ['pool', 'import', 'r2', '--raid', ...m])).toMatch(new RegExp(`^imported pool 'r2': 64M on RAID 5 array ${ex.arrayUuid} \\(3 members\\), 1 volume, optimal\\n$`));
    expect((await inProcessJson<Array<{ name: string }>>(home, ['volume', 'list', 'r2'])).map((v) => v.name)).toEqual(['v']);

    // A member let go by a replace no longer claims its role.
    const d = path.join(dir, 'd');
    await inProcessRun(home, ['raid', 'replace', '--pool', 'r2', m[0]!, d]);
    const released = await inProcessJson<{ state: string; arrayUuid: string }>(home, ['raid', 'examine', m[0]!]);
    expect(released).toMatchObject({ state: 'released', arrayUuid: ex.arrayUuid });
    expect(await inProcess(home, ['raid', 'examine', m[0]!])).toMatch(/^state: +released/m);
    const after = await inProcessJson<Array<{ found: Array<{ path: string }> }>>(home, ['pool', 'import', '--scan', dir]);
    expect(after[0]!.found.map((f) => f.path).sort()).toEqual([m[1]!, m[2]!, d].sort());
    // Released, it is free to reuse without --force.
    await inProcess(home, ['pool', 'create', 'reuse', '--raid', '1', '--members', `${m[0]},${path.join(dir, 'e')}`, '--size', '16M']);
  }, 60_000);
});

describe('pool resize', () => {
  it('grows a file pool offline and refuses a shrink or a RAID pool', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p', '--size', '1G']);
    await inProcess(home, ['volume', 'create', 'p/v', '900M']);
    expect(await inProcessFails(home, ['pool', 'resize', 'p', '512M'])).toBe("cannot shrink pool 'p' from 1G to 512M: pools only grow");
    expect(await inProcess(home, ['pool', 'resize', 'p', '3G'])).toBe("resized pool 'p': 1G -> 3G (capacity 1G -> 3G)\n");
    expect(fs.statSync(path.join(home, 'p.pool')).size).toBe(3 * GIB);
    const info = await inProcessJson<Summary & { totalBytes: number }>(home, ['pool', 'info', 'p']);
    expect(info.deviceSize).toBe(3 * GIB);
    expect(info.totalBytes).toBe((3 * GIB) - 2 * 65536);
    expect((await inProcessJson<{ size: number }>(home, ['pool', 'resize', 'p', '+1G'])).size).toBe(4 * GIB);
    expect((await inProcessJson<{ clean: boolean }>(home, ['pool', 'check', 'p'])).clean).toBe(true);
    expect(await inProcessFails(home, ['pool', 'resize', 'p', '100G'])).toMatch(/can grow to at most 32G \(\d+ bytes\): its allocation bitmap covers no more/);
    expect(fs.statSync(path.join(home, 'p.pool')).size).toBe(4 * GIB);

    const m = [file('r1'), file('r2')];
    await inProcess(home, ['pool', 'create', 'r', '--raid', '1', '--members', m.join(','), '--size', '32M']);
    expect(await inProcessFails(home, ['pool', 'resize', 'r', '64M'])).toMatch(/is on a RAID array: growing it needs every member replaced by a bigger one/);
  });

  it('grows a served pool online, through its server', async () => {
    const home = freshHome();
    await inProcess(home, ['pool', 'create', 'p', '--size', '1G']);
    await inProcess(home, ['volume', 'create', 'p/v', '64M']);
    const srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    try {
      expect(await inProcess(home, ['pool', 'resize', 'p', '2G'])).toMatch(/^resized pool 'p': 1G -> 2G/);
      expect((await inProcessJson<Summary>(home, ['pool', 'info', 'p'])).deviceSize).toBe(2 * GIB);
      expect((await inProcessJson<{ clean: boolean }>(home, ['pool', 'check', 'p'])).clean).toBe(true);
    } finally {
      await srv.stop();
    }
    expect((await inProcessJson<Summary>(home, ['pool', 'info', 'p'])).deviceSize).toBe(2 * GIB);
    expect((await inProcessJson<{ clean: boolean }>(home, ['pool', 'check', 'p'])).clean).toBe(true);
  }, 60_000);
});
