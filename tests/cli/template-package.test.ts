import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TemplateInfo } from '../../src/snapshot/index.js';
import { hasTool } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { convertDisk, rawDisk, tarMembers, writeOvfDir, type VmSpec } from '../support/template-packages.js';
import { buildCli, fails, json, ok } from './strata.js';

/**
 * `strata template import|export` end to end on packages built with tar,
 * sha256sum and qemu-img: what comes in reads as the original disks
 * (qemu-img compare on a clone's export), keeps its VM settings, and goes
 * back out as packages qemu-img and tar accept; every refusal leaves no
 * volume and no template behind.
 */
const MiB = 1 << 20;
const tools = ['qemu-img', 'tar', 'sha256sum'].every(hasTool);

describe.skipIf(!tools)('template import and export of OVF and OVA packages', () => {
  const scratch = scratchDir('template-package');
  const dir = scratch.dir;
  const home = path.join(dir, 'home');
  const raw1 = path.join(dir, 'd1.raw');
  const raw2 = path.join(dir, 'd2.raw');
  const vm = (name: string, over: Partial<VmSpec> = {}): VmSpec => ({
    name,
    cpus: 2,
    memoryMiB: 2048,
    network: 'VM Network',
    disks: [
      { href: 'disk1.vmdk', capacity: 64 * MiB, format: 'vmdk-stream' },
      { href: 'disk2.qcow2', capacity: 16 * MiB, format: 'qcow2' },
    ],
    ...over,
  });
  /** A fresh package folder with both disks in their formats. */
  const folder = (name: string, spec: VmSpec = vm(name), opts: { manifest?: boolean } = {}): string => {
    const d = path.join(dir, name);
    fs.mkdirSync(d);
    for (const [i, disk] of spec.disks.entries()) if (i < 2) convertDisk(i === 0 ? raw1 : raw2, path.join(d, disk.href), disk.format);
    writeOvfDir(d, spec, opts);
    return d;
  };
  /** Nothing half-imported: no volume and no template in pool q, where only refused imports went. */
  const nothingLeft = (): void => {
    expect(json<unknown[]>(home, ['volume', 'list', 'q'])).toEqual([]);
    expect(json<unknown[]>(home, ['template', 'list', 'q'])).toEqual([]);
  };
  const same = (a: string, b: string, fb = 'raw'): void => {
    expect(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', fb, a, b], { encoding: 'utf8' })).toMatch(/identical/);
  };

  beforeAll(() => {
    buildCli();
    ok(home, ['pool', 'create', 'p', '--size', '1G', '--path', path.join(dir, 'p.pool')]);
    ok(home, ['pool', 'create', 'q', '--size', '256M', '--path', path.join(dir, 'q.pool')]);
    // Data at the start, in the middle and in the last MiB, holes between: sparse-friendly but not all zero.
    rawDisk(raw1, 64 * MiB, [0, 10 * MiB, 63 * MiB]);
    rawDisk(raw2, 16 * MiB, [MiB]);
  });
  afterAll(() => scratch.cleanup());

  it('imports an OVF directory as one template per disk, with its VM settings, under the VM name', () => {
    const d = folder('web');
    const r = json<{ templates: TemplateInfo[]; disks: Array<{ template: string; format: string; subformat: string | null }> }>(home, ['template', 'import', d, 'p']);
    expect(r.templates.map((t) => [t.name, t.size])).toEqual([
      ['web', 64 * MiB],
      ['web-disk2', 16 * MiB],
    ]);
    expect(r.disks.map((x) => [x.template, x.format, x.subformat])).toEqual([
      ['web', 'vmdk', 'streamOptimized'],
      ['web-disk2', 'qcow2', 'v3'],
    ]);
    const info = json<TemplateInfo>(home, ['template', 'info', 'p/web']);
    expect(info.settings).toMatchObject({ name: 'web', cpus: 2, memoryBytes: 2048 * MiB, os: { ovfId: 94, osType: 'ubuntu64Guest' }, networks: [{ name: 'VM Network', model: 'vmxnet3' }], source: 'ovf' });
    expect((info.settings as { disks: Array<{ name: string; capacity: number }> }).disks.map((x) => [x.name, x.capacity])).toEqual([
      ['web', 64 * MiB],
      ['web-disk2', 16 * MiB],
    ]);
    expect(json<TemplateInfo>(home, ['template', 'info', 'p/web-disk2']).settings).toBeNull();
    const human = ok(home, ['template', 'info', 'p/web']);
    expect(human).toMatch(/^vm cpus: +2$/m);
    expect(human).toMatch(/^vm memoryBytes: +2G \(2147483648 bytes\)$/m);
    // A clone of it is an ordinary linked clone that reads the disk.
    ok(home, ['clone', 'p/web', 'p/vm1']);
    ok(home, ['export', 'p/vm1', path.join(dir, 'vm1.raw')]);
    same(raw1, path.join(dir, 'vm1.raw'));
    ok(home, ['template', 'export', 'p/web', path.join(dir, 'web-raw'), '--package', 'ovf', '--disk-format', 'raw']);
    same(raw2, path.join(dir, 'web-raw', 'web-disk2.img'));
    // Only the data was written: 3 MiB of the first disk's 64.
    expect(info.allocatedBytes).toBe(3 * MiB);
    expect(json<{ clean: boolean }>(home, ['pool', 'check', 'p']).clean).toBe(true);
  });

  it('exports an OVA (tar order: descriptor, manifest, disks) that qemu-img reads as the disks, and an OVF directory in any disk format', () => {
    const ova = path.join(dir, 'out.ova');
    ok(home, ['template', 'export', 'p/web', ova]);
    expect(tarMembers(ova)).toEqual(['web.ovf', 'web.mf', 'web.vmdk', 'web-disk2.vmdk']);
    const x = path.join(dir, 'ova-x');
    fs.mkdirSync(x);
    execFileSync('tar', ['xf', ova, '-C', x]);
    expect(execFileSync('sha256sum', ['-c', '--quiet', '-'], { cwd: x, input: fs.readFileSync(path.join(x, 'web.mf'), 'utf8').replace(/^SHA256\((.+)\)= (\w+)$/gm, '$2  $1'), encoding: 'utf8' })).toBe('');
    expect(execFileSync('qemu-img', ['info', path.join(x, 'web.vmdk')], { encoding: 'utf8' })).toMatch(/create type: streamOptimized/);
    same(raw1, path.join(x, 'web.vmdk'), 'vmdk');
    same(raw2, path.join(x, 'web-disk2.vmdk'), 'vmdk');
    expect(fails(home, ['template', 'export', 'p/web', ova])).toBe(`strata: ${ova} already exists (use --force to overwrite it)`);
    const ovf = path.join(dir, 'out-ovf');
    ok(home, ['template', 'export', 'p/web', ovf, '--package', 'ovf', '--disk-format', 'qcow2']);
    expect(fs.readdirSync(ovf).sort()).toEqual(['web-disk2.qcow2', 'web.mf', 'web.ovf', 'web.qcow2']);
    execFileSync('qemu-img', ['check', path.join(ovf, 'web.qcow2')]);
    same(raw1, path.join(ovf, 'web.qcow2'), 'qcow2');
    // What went out comes back in: same bytes, same settings.
    const again = json<{ templates: TemplateInfo[] }>(home, ['template', 'import', ovf, 'p/back']);
    expect(again.templates.map((t) => t.name)).toEqual(['back', 'back-disk2']);
    const before = json<TemplateInfo>(home, ['template', 'info', 'p/web']).settings as Record<string, unknown>;
    const after = json<TemplateInfo>(home, ['template', 'info', 'p/back']).settings as Record<string, unknown>;
    expect({ ...after, disks: undefined }).toEqual({ ...before, disks: undefined });
    expect(after.disks).toEqual((before.disks as Array<Record<string, unknown>>).map((d, i) => ({ ...d, name: i === 0 ? 'back' : 'back-disk2' })));
  });

  it('refuses a missing disk, an href leaving the package and a disk larger than declared, leaving nothing behind', () => {
    const missing = folder('missing');
    fs.rmSync(path.join(missing, 'disk2.qcow2'));
    expect(fails(home, ['template', 'import', missing, 'q/x'])).toMatch(/disk vmdisk2: its file disk2\.qcow2 is missing from the package/);

    const escape = vm('escape', { disks: [{ href: '../d1.raw', capacity: 64 * MiB, format: 'raw' }] });
    const e = path.join(dir, 'escape');
    fs.mkdirSync(e);
    writeOvfDir(e, escape, { manifest: false });
    expect(fails(home, ['template', 'import', e, 'q/x'])).toMatch(/the href '\.\.\/d1\.raw' leaves the package/);

    // The second disk is 16 MiB; the descriptor says 8: refused after the first disk was written, which goes again.
    const big = folder('big', vm('big', { disks: [vm('big').disks[0]!, { href: 'disk2.qcow2', capacity: 8 * MiB, format: 'qcow2' }] }));
    expect(fails(home, ['template', 'import', big, 'q/x'])).toMatch(/disk2\.qcow2: is 16M \(16777216 bytes\), larger than the 8M \(8388608 bytes\) its descriptor declares/);
    // Checked once for all of them: any of them leaving something would show here.
    nothingLeft();
    expect(json<{ clean: boolean }>(home, ['pool', 'check', 'q']).clean).toBe(true);
  });
});
