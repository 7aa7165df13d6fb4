import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, startServe, tool, type ServeProcess } from '../nbd/support.js';
import { cephConf, TEST_CEPH_POOL, uniqueName } from '../support/ceph.js';
import { literal } from '../support/literal.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessFails } from './in-process.js';
import { deviceId, deviceObjects, exportUri } from './rados.js';
import { buildCli, fails, ok, strata } from './strata.js';

const conf = cephConf();

interface RadosPoolJson {
  name: string;
  backing: { kind: string; cephPool: string; image: string; conf?: string; id?: string };
  deviceSize: number;
  clusterSize: number;
  volumes: number;
  hostAllocatedBytes: number | null;
}

/** Output with what changes from run to run taken out: times, how long a served check held writes, the run's own prefix. */
function stable(text: string, prefix: string): string {
  return text
    .replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, 'TIME')
    .replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'TIME')
    .replace(/,\n\s*"heldWritesMs": \d+/g, '')
    .replaceAll(prefix, 'RUN');
}

/** Every name of an object in the record, at any depth. */
function keysOf(value: unknown): string[] {
  if (typeof value !== 'object' || value === null) return [];
  return Object.entries(value).flatMap(([k, v]) => [k, ...keysOf(v)]);
}

describe.skipIf(conf === undefined)('a pool on RADOS through the CLI', () => {
  // Made once the suite runs: a skipped one leaves no directory behind.
  let dir = '';
  let cleanup = (): void => undefined;
  let home = '';
  let other = '';
  let img = '';
  let img2 = '';
  const name = uniqueName('cli');
  let srv: ServeProcess | undefined;

  beforeAll(() => {
    ({ dir, cleanup } = scratchDir('cli-rados-pool'));
    home = path.join(dir, 'a');
    other = path.join(dir, 'b');
    img = path.join(dir, 'img.raw');
    img2 = path.join(dir, 'img2.raw');
    buildCli();
    expect(hasTool('qemu-img') && hasTool('qemu-io') && hasTool('rados')).toBe(true);
    // Data, a hole, data again; and a second image that differs in every data block, to revert from.
    fs.writeFileSync(img, Buffer.concat([Buffer.alloc(3 << 20, 0x31), Buffer.alloc(2 << 20), Buffer.alloc(3 << 20, 0x32)]));
    fs.writeFileSync(img2, Buffer.alloc(8 << 20, 0x99));
  });
  afterAll(async () => {
    await srv?.stop();
    // A test that failed half-way leaves nothing in the shared Ceph pool.
    for (const h of [home, other]) if (fs.existsSync(path.join(h, 'pools', `${name}.json`))) strata(h, ['pool', 'delete', name, '--force']);
    cleanup();
  });

  it('creates a pool on RADOS and shows where it lives, with no key in its record', async () => {
    const created = JSON.parse(ok(home, ['--json', 'pool', 'create', name, '--rados', TEST_CEPH_POOL, '--ceph-conf', conf!, '--size', '1G', '--cluster-size', '128K'])) as RadosPoolJson;
    expect(created).toMatchObject({ name, backing: { kind: 'rados', cephPool: TEST_CEPH_POOL, image: name, conf: conf! }, deviceSize: 1 << 30, clusterSize: 128 << 10, volumes: 0, hostAllocatedBytes: null });
    const where = `rados:${TEST_CEPH_POOL}/${name} (client.admin, ${conf!})`;
    expect(ok(home, ['pool', 'info', name])).toMatch(new RegExp(`^backing:\\s+${literal(where)}$`, 'm'));
    expect(ok(home, ['pool', 'info', name])).toMatch(/^device size:\s+1G \(1073741824 bytes\)$/m);
    expect(ok(home, ['pool', 'info', name])).toMatch(/^on host:\s+-$/m);
    const rows = ok(home, ['pool', 'list']).trimEnd().split('\n');
    expect(rows[1]).toMatch(new RegExp(`^${name}\\s+1G\\s+\\S+\\s+\\S+\\s+0 \\(0\\.0%\\)\\s+0\\s+optimal\\s+${literal(where)}$`));
    const listed = JSON.parse(ok(home, ['--json', 'pool', 'list'])) as RadosPoolJson[];
    expect(listed.map((p) => [p.name, p.backing.kind, p.deviceSize])).toEqual([[name, 'rados', 1 << 30]]);
    // The record says where the pool is; the key stays in the keyring the config names.
    const record = fs.readFileSync(path.join(home, 'pools', `${name}.json`), 'utf8');
    expect(JSON.parse(record)).toMatchObject({ name, backing: { kind: 'rados', cephPool: TEST_CEPH_POOL, image: name, conf: conf! } });
    expect(keysOf(JSON.parse(record)).filter((k) => /key|secret|auth/i.test(k))).toEqual([]);
    const keyring = /^keyring\s*=\s*(.+)$/m.exec(fs.readFileSync(conf!, 'utf8'))![1]!.trim();
    const key = /key\s*=\s*(\S+)/.exec(fs.readFileSync(keyring, 'utf8'))![1]!;
    expect(record).not.toContain(key);
    expect((await deviceObjects(conf!, name, await deviceId(conf!, name))).length).toBeGreaterThan(1);
  });

  it('refuses in one line what cannot be, and leaves nothing behind', () => {
    const rados = ['--rados', TEST_CEPH_POOL, '--ceph-conf', conf!];
    expect(fails(other, ['pool', 'create', name, ...rados, '--size', '1G'])).toBe(
      `strata: cannot create pool '${name}': Ceph pool '${TEST_CEPH_POOL}' already holds a Strata pool named '${name}' (to use it from this home: strata pool import ${name} --rados ${TEST_CEPH_POOL} --ceph-conf ${conf!})`,
    );
    expect(fails(other, ['pool', 'create', 'x', ...rados, '--raid', '1', '--members', 'm1,m2'])).toBe('strata: --rados and --raid exclude each other: RADOS keeps its own replicas');
    expect(fails(other, ['pool', 'create', 'x', ...rados, '--path', path.join(dir, 'x.pool')])).toBe('strata: --path is for a pool file; a pool on --rados lives in the Ceph pool');
    expect(fails(other, ['pool', 'create', 'x', '--ceph-conf', conf!])).toBe('strata: --ceph-conf goes with --rados CEPHPOOL');
    expect(fails(other, ['pool', 'create', 'x', '--rados', 'no-such-ceph-pool', '--ceph-conf', conf!, '--size', '1G'])).toBe("strata: cannot create pool 'x': Ceph pool 'no-such-ceph-pool' does not exist: ENOENT");
    const missing = path.join(dir, 'missing.conf');
    expect(fails(other, ['pool', 'create', 'x', '--rados', TEST_CEPH_POOL, '--ceph-conf', missing, '--size', '1G'])).toBe(`strata: cannot create pool 'x': cannot read the Ceph config ${missing}: ENOENT`);
    expect(ok(other, ['pool', 'list'])).toBe(`no pools in ${other}\n`);
    expect(fs.existsSync(path.join(dir, 'x.pool'))).toBe(false);
    // The pool that was there is untouched by the refused create of its name.
    expect(ok(home, ['pool', 'info', name])).toMatch(/^volumes:\s+0$/m);
  });

  /**
   * Every verb on volumes, snapshots, clones and templates, in `--json` or
   * not, on names of its own (RUN- in what it returns); it ends with the
   * pool as it began.
   */
  async function lifecycle(run: string, asJson: boolean): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    const p = (vol: string): string => `${name}/${run}-${vol}`;
    const step = async (label: string, args: string[]): Promise<void> => {
      out[label] = stable(await inProcess(home, asJson ? ['--json', ...args] : args), run);
    };
    await step('create', ['volume', 'create', p('v'), '64M']);
    await step('resize', ['volume', 'resize', p('v'), '128M']);
    await step('info', ['volume', 'info', p('v')]);
    await step('import', ['import', p('im'), img]);
    await step('snapshot', ['snapshot', 'create', `${p('im')}@s1`]);
    await step('overwrite', ['import', p('im'), img2, '--force']);
    await step('revert', ['snapshot', 'revert', `${p('im')}@s1`]);
    const exported = path.join(dir, `${run}.raw`);
    await step('export', ['export', p('im'), exported]);
    out.compare = await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', img, exported]);
    await step('clone', ['clone', `${p('im')}@s1`, p('c')]);
    await step('template', ['template', 'create', p('c')]);
    await step('template clone', ['clone', p('c'), p('t')]);
    await step('map', ['map', p('t')]);
    await step('list', ['volume', 'list', name]);
    await step('snapshots', ['snapshot', 'list', p('im')]);
    await step('check', ['pool', 'check', name]);
    await step('delete clone', ['volume', 'delete', p('t')]);
    await step('delete template', ['template', 'delete', p('c')]);
    await step('delete snapshot', ['snapshot', 'delete', `${p('im')}@s1`]);
    await step('delete', ['volume', 'delete', p('im')]);
    await step('delete v', ['volume', 'delete', p('v')]);
    await step('list after', ['volume', 'list', name]);
    return out;
  }

  /** What a run said, told as people read it; `others` are the volumes the pool holds besides the run's own. */
  function expectHuman(o: Record<string, string>, others: string[]): void {
    const vol = (v: string): string => `${name}/RUN-${v}`;
    expect(o.create).toBe(`created volume ${vol('v')}: 64M\n`);
    expect(o.resize).toBe(`resized ${vol('v')}: 64M -> 128M\n`);
    expect(o.info).toMatch(/^size:\s+128M \(134217728 bytes\)$/m);
    expect(o.import).toBe(`imported ${img} into ${vol('im')} (created, 8M): 8M read, 6M written, 2M of zeroes not written\n`);
    expect(o.snapshot).toBe(`created snapshot ${vol('im')}@s1\n`);
    expect(o.overwrite).toBe(`imported ${img2} into ${vol('im')}: 8M read, 8M written, 0 of zeroes not written\n`);
    expect(o.revert).toBe(`reverted ${vol('im')} to ${vol('im')}@s1\n`);
    expect(o.export).toBe(`exported ${vol('im')} to ${path.join(dir, 'RUN.raw')}: 8M, 6M written, 2M left sparse\n`);
    expect(o.compare).toMatch(/identical/);
    expect(o.clone).toBe(`cloned ${vol('im')}@s1 to ${vol('c')}: 8M, linked\n`);
    expect(o.template).toBe(`converted volume ${vol('c')} into template ${vol('c')}: 8M, read-only and protected\n`);
    expect(o['template clone']).toBe(`cloned ${vol('c')} to ${vol('t')}: 8M, linked\n`);
    expect(o.map).toMatch(/^\s*0\s+3145728\s+data\s+3M\n\s*3145728\s+2097152\s+hole\s+2M\n\s*5242880\s+3145728\s+data\s+3M\n/m);
    expect(o.map).toMatch(new RegExp(`^${literal(vol('t'))}: data 6M, zero 0, hole 2M$`, 'm'));
    const names = (table: string): string[] => table.trimEnd().split('\n').slice(1).map((l) => l.split(/\s+/)[0]!);
    expect(names(o.list!).sort()).toEqual([...others, 'RUN-im', 'RUN-t', 'RUN-v'].sort());
    expect(o.snapshots).toMatch(/^RUN-im@s1\s+snapshot\s/m);
    expect(o.snapshots).toMatch(/─ RUN-c\s+template\s/);
    expect(o.snapshots).toMatch(/─ RUN-t\s+volume\s/);
    expect(o.check).toMatch(/ 0 problems, 0 leaked clusters, 0 corrupt blocks\n$/);
    expect(o['delete clone']).toBe(`deleted volume ${vol('t')}\n`);
    expect(o['delete template']).toBe(`deleted template ${vol('c')}\n`);
    expect(o['delete snapshot']).toMatch(new RegExp(`^deleted snapshot ${literal(vol('im'))}@s1`));
    expect(o.delete).toBe(`deleted volume ${vol('im')}\n`);
    expect(others.length === 0 ? o['list after'] : names(o['list after']!)).toEqual(others.length === 0 ? `no volumes in pool '${name}'\n` : others);
  }

  /** The same run with --json. */
  function expectJson(o: Record<string, string>, others: string[]): void {
    const j = (label: string): unknown => JSON.parse(o[label]!);
    expect(j('create')).toMatchObject({ pool: name, name: 'RUN-v', size: 64 << 20, allocatedBytes: 0 });
    expect(j('resize')).toMatchObject({ pool: name, volume: 'RUN-v', oldSize: 64 << 20, size: 128 << 20 });
    expect(j('info')).toMatchObject({ name: 'RUN-v', size: 128 << 20, chain: ['RUN-v'], origin: null });
    expect(j('import')).toMatchObject({ volume: 'RUN-im', format: 'raw', created: true, bytesWritten: 6 << 20, zeroBytes: 2 << 20, volumeSize: 8 << 20 });
    expect(j('overwrite')).toMatchObject({ volume: 'RUN-im', created: false, bytesWritten: 8 << 20 });
    expect(j('revert')).toMatchObject({ reverted: `${name}/RUN-im`, to: `${name}/RUN-im@s1` });
    expect(j('export')).toMatchObject({ volume: 'RUN-im', size: 8 << 20, bytesWritten: 6 << 20, format: 'raw' });
    expect(o.compare).toMatch(/identical/);
    expect(j('clone')).toMatchObject({ name: 'RUN-c', origin: `${name}/RUN-im@s1`, full: false });
    expect(j('template')).toMatchObject({ name: 'RUN-c', origin: 'RUN-im@s1', size: 8 << 20 });
    expect(j('template clone')).toMatchObject({ name: 'RUN-t', origin: `${name}/RUN-c`, full: false });
    expect(j('map')).toEqual([
      { offset: 0, length: 3 << 20, type: 'data', zero: false, hole: false },
      { offset: 3 << 20, length: 2 << 20, type: 'hole', zero: true, hole: true },
      { offset: 5 << 20, length: 3 << 20, type: 'data', zero: false, hole: false },
    ]);
    expect((j('list') as { name: string }[]).map((v) => v.name).sort()).toEqual([...others, 'RUN-im', 'RUN-t', 'RUN-v'].sort());
    expect(j('check')).toMatchObject({ pool: name, clean: true, problems: [], leakedClusters: 0, corruptBlocks: 0 });
    expect(j('delete clone')).toEqual({ deleted: `${name}/RUN-t` });
    expect(j('delete template')).toEqual({ deleted: `${name}/RUN-c` });
    expect(j('delete')).toEqual({ deleted: `${name}/RUN-im` });
    expect((j('list after') as { name: string }[]).map((v) => v.name)).toEqual(others);
  }

  it('runs every volume, snapshot, clone, template, map, check, import and export verb', async () => {
    expectHuman(await lifecycle('off-h', false), []);
    expectJson(await lifecycle('off-j', true), []);
  }, 120_000);

  it('runs them all through the control socket while strata serve holds the pool', async () => {
    await inProcess(home, ['volume', 'create', `${name}/nbd`, '32M']);
    srv = await startServe(['--home', home, name, '--listen', '127.0.0.1:0']);
    // Served, the pool's RADOS lock is the server's: each verb succeeds only by going through its socket.
    expect(await inProcess(home, ['pool', 'info', name])).toMatch(new RegExp(`^backing:\\s+rados:${TEST_CEPH_POOL}/${name} .*\\n(.*\\n)*volumes:\\s+1$`, 'm'));
    expect(await inProcess(home, ['pool', 'list'])).toMatch(new RegExp(`^${name}\\s+1G\\s.*\\s1\\s+optimal\\s+rados:${TEST_CEPH_POOL}/${name} `, 'm'));
    expect(JSON.parse(await inProcess(home, ['--json', 'pool', 'info', name]))).toMatchObject({ backing: { kind: 'rados', image: name }, volumes: 1, hostAllocatedBytes: null });
    expectHuman(await lifecycle('srv-h', false), ['nbd']);
    expectJson(await lifecycle('srv-j', true), ['nbd']);
    // Nor is it deleted under the server; the refusal names the server, and no takeover (that would refuse it too).
    const refused = await inProcessFails(home, ['pool', 'delete', name, '--force']);
    expect(refused).toMatch(new RegExp(`^pool '${name}' is in use by another process of this home \\(pid ${srv.child.pid!}\\): its RADOS lock is held by host=${literal(os.hostname())} machine=\\S+ home=${literal(home)} pid=${srv.child.pid!} `));
    expect(refused).not.toMatch(/takeover/);
  }, 120_000);

  it('keeps what qemu-img and qemu-io wrote through NBD once the server stops and the pool reopens', async () => {
    const uri = exportUri(srv!, 'nbd');
    await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', img, uri]);
    await tool('qemu-io', ['-f', 'raw', uri, '-c', 'write -P 0x6b 20M 1M', '-c', 'flush']);
    expect(await srv!.stop()).toBe(0);
    srv = undefined;
    const expected = Buffer.alloc(32 << 20);
    fs.readFileSync(img).copy(expected, 0);
    expected.fill(0x6b, 20 << 20, 21 << 20);
    fs.writeFileSync(path.join(dir, 'expected.raw'), expected);
    const back = path.join(dir, 'back.raw');
    ok(home, ['export', `${name}/nbd`, back]);
    expect(await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', path.join(dir, 'expected.raw'), back])).toMatch(/identical/);
    expect(ok(home, ['pool', 'check', name])).toMatch(/ 0 problems, 0 leaked clusters, 0 corrupt blocks\n$/);
  }, 60_000);

  it('deletes the pool with every object it had in RADOS', async () => {
    const id = await deviceId(conf!, name);
    expect((await deviceObjects(conf!, name, id)).length).toBeGreaterThan(1);
    // A second home that has it registered too, to look after it is gone.
    expect(ok(other, ['pool', 'import', name, '--rados', TEST_CEPH_POOL, '--ceph-conf', conf!])).toMatch(new RegExp(`^imported pool '${name}': 1G on RADOS`));
    expect(fails(home, ['pool', 'delete', name])).toBe(`strata: pool '${name}' holds 1 volume (nbd); use --force to delete it with them`);
    const deleted = JSON.parse(ok(home, ['--json', 'pool', 'delete', name, '--force'])) as { deleted: string; path: string | null; kept: string | null };
    expect(deleted).toEqual({ deleted: name, path: `rados:${TEST_CEPH_POOL}/${name}`, kept: null });
    expect(await deviceObjects(conf!, name, id)).toEqual([]);
    expect(fails(home, ['pool', 'info', name])).toBe(`strata: pool '${name}' not found in ${home}`);
    // Where it is still registered, it is missing; looking leaves nothing behind in the Ceph pool.
    const gone = `strata: pool '${name}': rados:${TEST_CEPH_POOL}/${name}: open: no device named '${name}' in Ceph pool '${TEST_CEPH_POOL}' (object strata_header.${name} is missing)`;
    expect(fails(other, ['pool', 'info', name])).toBe(gone);
    expect(JSON.parse(ok(other, ['--json', 'pool', 'list']))).toEqual([expect.objectContaining({ name, error: gone.slice('strata: '.length) })]);
    expect(await deviceObjects(conf!, name, id)).toEqual([]);
    expect(fails(other, ['pool', 'delete', name])).toBe(gone);
    expect(ok(other, ['pool', 'delete', name, '--force'])).toBe(`deleted pool '${name}' from the registry (its objects were already gone from rados:${TEST_CEPH_POOL}/${name})\n`);
    // Its name is free again in the Ceph pool.
    expect(ok(other, ['pool', 'create', name, '--rados', TEST_CEPH_POOL, '--ceph-conf', conf!, '--size', '64M'])).toBe(`created pool '${name}': 64M on RADOS in Ceph pool '${TEST_CEPH_POOL}' (cluster size 64K)\n`);
    expect(ok(other, ['pool', 'delete', name])).toBe(`deleted pool '${name}' (removed its objects from rados:${TEST_CEPH_POOL}/${name})\n`);
  }, 60_000);
});
