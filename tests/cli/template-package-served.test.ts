import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TemplateInfo } from '../../src/snapshot/index.js';
import { hasTool, startServe, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { convertDisk, rawDisk, tarMembers, tarOva, writeOvfDir, type VmSpec } from '../support/template-packages.js';
import { buildCli, fails } from './strata.js';
import { inProcess, inProcessJson } from './in-process.js';

/**
 * Template import and export on a pool `strata serve` holds: the volumes
 * are made over its control socket and written over its NBD exports, the
 * server keeps serving, and a refused package leaves nothing in it.
 */
const MiB = 1 << 20;
const tools = ['qemu-img', 'tar', 'sha256sum'].every(hasTool);

describe.skipIf(!tools)('template import and export on a served pool', () => {
  const scratch = scratchDir('template-served');
  const dir = scratch.dir;
  const home = path.join(dir, 'home');
  let srv: ServeProcess | undefined;
  const vm: VmSpec = { name: 'db', cpus: 1, memoryMiB: 1024, network: 'VM Network', disks: [{ href: 'disk1.vmdk', capacity: 32 * MiB, format: 'vmdk-stream' }] };

  beforeAll(async () => {
    buildCli();
    await inProcess(home, ['pool', 'create', 'p', '--size', '512M', '--path', path.join(dir, 'p.pool')]);
    // A server needs something to serve: a guest's disk, in use all along.
    await inProcess(home, ['volume', 'create', 'p/busy', '16M']);
    rawDisk(path.join(dir, 'd1.raw'), 32 * MiB, [MiB, 20 * MiB]);
    const pkg = path.join(dir, 'pkg');
    fs.mkdirSync(pkg);
    convertDisk(path.join(dir, 'd1.raw'), path.join(pkg, 'disk1.vmdk'), 'vmdk-stream');
    writeOvfDir(pkg, vm);
    tarOva(pkg, vm, path.join(dir, 'db.ova'));
    // The same package with the disk's digest changed in its manifest.
    const mf = path.join(pkg, 'db.mf');
    fs.writeFileSync(mf, fs.readFileSync(mf, 'utf8').replace(/(SHA256\(disk1\.vmdk\)= )(.)/, (_, a: string, c: string) => a + (c === '0' ? '1' : '0')));
    tarOva(pkg, vm, path.join(dir, 'damaged.ova'));
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
  });
  afterAll(async () => {
    await srv?.stop();
    scratch.cleanup();
  });

  it('imports an OVA through the server, clones it, and exports it back as an OVA that compares equal', async () => {
    const r = await inProcessJson<{ templates: TemplateInfo[] }>(home, ['template', 'import', path.join(dir, 'db.ova'), 'p/db']);
    expect(r.templates.map((t) => [t.name, t.settings === null])).toEqual([['db', false]]);
    await inProcess(home, ['clone', 'p/db', 'p/db1']);
    expect((await inProcessJson<TemplateInfo>(home, ['template', 'info', 'p/db'])).dependants).toEqual(['db1']);
    const out = path.join(dir, 'out.ova');
    await inProcess(home, ['template', 'export', 'p/db', out]);
    expect(tarMembers(out)).toEqual(['db.ovf', 'db.mf', 'db.vmdk']);
    execFileSync('tar', ['xf', out, '-C', dir, 'db.vmdk']);
    expect(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', path.join(dir, 'd1.raw'), path.join(dir, 'db.vmdk')], { encoding: 'utf8' })).toMatch(/identical/);
    expect(srv!.child.exitCode).toBeNull();
  });

  it("exports a domain XML whose disk, once its clone is made, is the served clone's NBD export", async () => {
    const port = new URL(srv!.uri).port;
    const xml = path.join(dir, 'db.xml');
    const said = await inProcess(home, ['template', 'export', 'p/db', xml, '--nbd', `127.0.0.1:${port}`]);
    // The pool is served already: what to run is the clone and virsh, not a second server.
    expect(said).toMatch(/: strata clone p\/db p\/db-vm; then virsh define .*db\.xml$/m);
    const m = /<source protocol='nbd' name='([^']+)'>\s*<host name='([^']+)' port='(\d+)'\/>/.exec(fs.readFileSync(xml, 'utf8'));
    expect(m?.slice(1)).toEqual(['p/db-vm', '127.0.0.1', port]);
    // Without --nbd the domain points at the server holding the pool, not at the default port.
    const bare = path.join(dir, 'bare', 'db.xml');
    fs.mkdirSync(path.dirname(bare));
    await inProcess(home, ['template', 'export', 'p/db', bare]);
    expect(fs.readFileSync(bare, 'utf8')).toContain(`<host name='127.0.0.1' port='${port}'/>`);
    await inProcess(home, ['clone', 'p/db', 'p/db-vm']);
    // What libvirt would hand QEMU: nbd://HOST:PORT/EXPORT, read here by qemu-img.
    const uri = `nbd://${m![2]}:${m![3]}/${m![1]}`;
    expect(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', path.join(dir, 'd1.raw'), uri], { encoding: 'utf8' })).toMatch(/identical/);
  });

  it('refuses a damaged manifest, leaving nothing in the served pool', async () => {
    expect(fails(home, ['template', 'import', path.join(dir, 'damaged.ova'), 'p/bad'])).toMatch(/^strata: disk1\.vmdk: its SHA256 digest is \w+, but db\.mf in .*damaged\.ova says \w+: the file is damaged or was changed$/);
    expect((await inProcessJson<Array<{ name: string }>>(home, ['volume', 'list', 'p'])).map((v) => v.name).sort()).toEqual(['busy', 'db-vm', 'db1']);
    expect((await inProcessJson<TemplateInfo[]>(home, ['template', 'list', 'p'])).map((t) => t.name)).toEqual(['db']);
  });
});
