import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TemplateInfo } from '../../src/snapshot/index.js';
import { hasTool } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { convertDisk, rawDisk, tarMembers, tarOva, writeOvfDir, type VmSpec } from '../support/template-packages.js';
import { buildCli, fails, strata } from './strata.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';

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
  const nothingLeft = async (): Promise<void> => {
    expect(await inProcessJson<unknown[]>(home, ['volume', 'list', 'q'])).toEqual([]);
    expect(await inProcessJson<unknown[]>(home, ['template', 'list', 'q'])).toEqual([]);
  };
  const same = (a: string, b: string, fb = 'raw'): void => {
    expect(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', fb, a, b], { encoding: 'utf8' })).toMatch(/identical/);
  };

  beforeAll(async () => {
    buildCli();
    await inProcess(home, ['pool', 'create', 'p', '--size', '1G', '--path', path.join(dir, 'p.pool')]);
    await inProcess(home, ['pool', 'create', 'q', '--size', '256M', '--path', path.join(dir, 'q.pool')]);
    // Data at the start, in the middle and in the last MiB, holes between: sparse-friendly but not all zero.
    rawDisk(raw1, 64 * MiB, [0, 10 * MiB, 63 * MiB]);
    rawDisk(raw2, 16 * MiB, [MiB]);
  });
  afterAll(() => scratch.cleanup());

  it('imports an OVF directory as one template per disk, with its VM settings, under the VM name', async () => {
    const d = folder('web');
    const r = await inProcessJson<{ templates: TemplateInfo[]; disks: Array<{ template: string; format: string; subformat: string | null }> }>(home, ['template', 'import', d, 'p']);
    expect(r.templates.map((t) => [t.name, t.size])).toEqual([
      ['web', 64 * MiB],
      ['web-disk2', 16 * MiB],
    ]);
    expect(r.disks.map((x) => [x.template, x.format, x.subformat])).toEqual([
      ['web', 'vmdk', 'streamOptimized'],
      ['web-disk2', 'qcow2', 'v3'],
    ]);
    const info = await inProcessJson<TemplateInfo>(home, ['template', 'info', 'p/web']);
    expect(info.settings).toMatchObject({ name: 'web', cpus: 2, memoryBytes: 2048 * MiB, os: { ovfId: 94, osType: 'ubuntu64Guest' }, networks: [{ name: 'VM Network', model: 'vmxnet3' }], source: 'ovf' });
    expect((info.settings as { disks: Array<{ name: string; capacity: number }> }).disks.map((x) => [x.name, x.capacity])).toEqual([
      ['web', 64 * MiB],
      ['web-disk2', 16 * MiB],
    ]);
    expect((await inProcessJson<TemplateInfo>(home, ['template', 'info', 'p/web-disk2'])).settings).toBeNull();
    const human = await inProcess(home, ['template', 'info', 'p/web']);
    expect(human).toMatch(/^vm cpus: +2$/m);
    expect(human).toMatch(/^vm memoryBytes: +2G \(2147483648 bytes\)$/m);
    // A clone of it is an ordinary linked clone that reads the disk.
    await inProcess(home, ['clone', 'p/web', 'p/vm1']);
    await inProcess(home, ['export', 'p/vm1', path.join(dir, 'vm1.raw')]);
    same(raw1, path.join(dir, 'vm1.raw'));
    await inProcess(home, ['template', 'export', 'p/web', path.join(dir, 'web-raw'), '--package', 'ovf', '--disk-format', 'raw']);
    same(raw2, path.join(dir, 'web-raw', 'web-disk2.img'));
    // Only the data was written: 3 MiB of the first disk's 64.
    expect(info.allocatedBytes).toBe(3 * MiB);
    expect((await inProcessJson<{ clean: boolean }>(home, ['pool', 'check', 'p'])).clean).toBe(true);
  });

  it('exports an OVA (tar order: descriptor, manifest, disks) that qemu-img reads as the disks and that imports again with the same bytes and settings, and an OVF directory in any disk format', async () => {
    const ova = path.join(dir, 'out.ova');
    await inProcess(home, ['template', 'export', 'p/web', ova]);
    expect(tarMembers(ova)).toEqual(['web.ovf', 'web.mf', 'web.vmdk', 'web-disk2.vmdk']);
    const x = path.join(dir, 'ova-x');
    fs.mkdirSync(x);
    execFileSync('tar', ['xf', ova, '-C', x]);
    expect(execFileSync('sha256sum', ['-c', '--quiet', '-'], { cwd: x, input: fs.readFileSync(path.join(x, 'web.mf'), 'utf8').replace(/^SHA256\((.+)\)= (\w+)$/gm, '$2  $1'), encoding: 'utf8' })).toBe('');
    expect(execFileSync('qemu-img', ['info', path.join(x, 'web.vmdk')], { encoding: 'utf8' })).toMatch(/create type: streamOptimized/);
    same(raw1, path.join(x, 'web.vmdk'), 'vmdk');
    same(raw2, path.join(x, 'web-disk2.vmdk'), 'vmdk');
    // The disk's descriptor names its own file, as VMware and VirtualBox look it up.
    expect(fs.readFileSync(path.join(x, 'web.vmdk')).subarray(512, 512 + 20 * 512).toString('latin1')).toMatch(/^RW \d+ SPARSE "web\.vmdk"$/m);
    expect(await inProcessFails(home, ['template', 'export', 'p/web', ova])).toBe(`${ova} already exists (use --force to overwrite it)`);
    const ovf = path.join(dir, 'out-ovf');
    await inProcess(home, ['template', 'export', 'p/web', ovf, '--package', 'ovf', '--disk-format', 'qcow2']);
    expect(fs.readdirSync(ovf).sort()).toEqual(['web-disk2.qcow2', 'web.mf', 'web.ovf', 'web.qcow2']);
    execFileSync('qemu-img', ['check', path.join(ovf, 'web.qcow2')]);
    same(raw1, path.join(ovf, 'web.qcow2'), 'qcow2');
    // What went out comes back in: same bytes, same settings.
    const again = await inProcessJson<{ templates: TemplateInfo[] }>(home, ['template', 'import', ova, 'p/back']);
    expect(again.templates.map((t) => t.name)).toEqual(['back', 'back-disk2']);
    const before = (await inProcessJson<TemplateInfo>(home, ['template', 'info', 'p/web'])).settings as Record<string, unknown>;
    const after = (await inProcessJson<TemplateInfo>(home, ['template', 'info', 'p/back'])).settings as Record<string, unknown>;
    // All but where they came from: the first import was an OVF directory, this one an OVA.
    expect({ ...after, disks: undefined, source: undefined }).toEqual({ ...before, disks: undefined, source: undefined });
    expect([before.source, after.source]).toEqual(['ovf', 'ova']);
    expect(after.disks).toEqual((before.disks as Array<Record<string, unknown>>).map((d, i) => ({ ...d, name: i === 0 ? 'back' : 'back-disk2' })));
    await inProcess(home, ['template', 'export', 'p/back-disk2', path.join(dir, 'back2-raw'), '--package', 'ovf', '--disk-format', 'raw']);
    same(raw2, path.join(dir, 'back2-raw', 'back-disk2.img'));
  });

  it('imports a libvirt domain XML with its disk beside it, and exports one whose disks are the NBD export of a clone', async () => {
    const d = path.join(dir, 'domain');
    fs.mkdirSync(d);
    convertDisk(raw2, path.join(d, 'root.qcow2'), 'qcow2');
    const domain = (source: string): string => `<domain type='kvm'>
  <name>kvm-guest</name>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${source}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
  </devices>
</domain>
`;
    fs.writeFileSync(path.join(d, 'vm.xml'), domain('root.qcow2'));
    const r = await inProcessJson<{ templates: TemplateInfo[] }>(home, ['template', 'import', path.join(d, 'vm.xml'), 'p']);
    expect(r.templates.map((t) => [t.name, t.size])).toEqual([['kvm-guest', 16 * MiB]]);
    expect(r.templates[0]!.settings).toMatchObject({ name: 'kvm-guest', cpus: 2, memoryBytes: 1024 * MiB, disks: [{ name: 'kvm-guest', capacity: 16 * MiB, bus: 'virtio', bootOrder: 1 }], networks: [{ name: 'default', model: 'virtio' }], source: 'libvirt' });
    fs.writeFileSync(path.join(d, 'outside.xml'), domain(raw2));
    expect(await inProcessFails(home, ['template', 'import', path.join(d, 'outside.xml'), 'p/o'])).toMatch(/disk vda: its source .*d2\.raw is outside the descriptor's directory/);

    const out = path.join(dir, 'xml-out', 'kvm.xml');
    fs.mkdirSync(path.dirname(out));
    const text = await inProcess(home, ['template', 'export', 'p/kvm-guest', out, '--nbd', '192.0.2.7:10809']);
    expect(text).toMatch(/strata clone p\/kvm-guest p\/kvm-guest-vm; then strata serve p and virsh define/);
    const xml = fs.readFileSync(out, 'utf8');
    expect(xml).toMatch(/<disk type='network' device='disk'>\s*<driver name='qemu' type='raw' discard='unmap'\/>\s*<source protocol='nbd' name='p\/kvm-guest-vm'>\s*<host name='192\.0\.2\.7' port='10809'\/>/);
    expect(xml).toMatch(/<vcpu placement='static'>2<\/vcpu>/);
    expect(xml).toMatch(/<memory unit='MiB'>1024<\/memory>/);
    same(raw2, path.join(dir, 'xml-out', 'kvm-guest.qcow2'), 'qcow2');
    expect(await inProcessFails(home, ['template', 'import', out, 'p/again'])).toMatch(/disk vda is an NBD export \(p\/kvm-guest-vm\), not a file; importing it is not supported/);
  });

  it('refuses a missing disk, an href leaving the package, a disk larger than declared, a damaged manifest and a truncated tar, leaving nothing behind', async () => {
    const missing = folder('missing', vm('missing'), { manifest: false });
    fs.rmSync(path.join(missing, 'disk2.qcow2'));
    expect(fails(home, ['template', 'import', missing, 'q/x'])).toMatch(/disk vmdisk2: its file disk2\.qcow2 is missing from the package/);

    const escape = vm('escape', { disks: [{ href: '../d1.raw', capacity: 64 * MiB, format: 'raw' }] });
    const e = path.join(dir, 'escape');
    fs.mkdirSync(e);
    writeOvfDir(e, escape, { manifest: false });
    expect(await inProcessFails(home, ['template', 'import', e, 'q/x'])).toMatch(/the href '\.\.\/d1\.raw' leaves the package/);

    // The second disk is 16 MiB; the descriptor says 8: refused after the first disk was written, which goes again.
    const big = folder('big', vm('big', { disks: [vm('big').disks[0]!, { href: 'disk2.qcow2', capacity: 8 * MiB, format: 'qcow2' }] }));
    expect(await inProcessFails(home, ['template', 'import', big, 'q/x'])).toMatch(/disk2\.qcow2: is 16M \(16777216 bytes\), larger than the 8M \(8388608 bytes\) its descriptor declares/);
    // An OVA whose manifest does not match its second disk: refused after the first disk was written, which goes again.
    const damaged = folder('damaged');
    const mf = path.join(damaged, 'damaged.mf');
    fs.writeFileSync(mf, fs.readFileSync(mf, 'utf8').replace(/(SHA256\(disk2\.qcow2\)= )(.)/, (_, a: string, c: string) => a + (c === '0' ? '1' : '0')));
    tarOva(damaged, vm('damaged'), path.join(dir, 'damaged.ova'));
    expect(await inProcessFails(home, ['template', 'import', path.join(dir, 'damaged.ova'), 'q/x'])).toMatch(/^disk2\.qcow2: its SHA256 digest is \w+, but damaged\.mf in .*damaged\.ova says \w+: the file is damaged or was changed$/);
    // The same OVA cut in the middle of its first disk.
    const whole = fs.readFileSync(path.join(dir, 'damaged.ova'));
    fs.writeFileSync(path.join(dir, 'cut.ova'), whole.subarray(0, 20 * 1024));
    expect(await inProcessFails(home, ['template', 'import', path.join(dir, 'cut.ova'), 'q/x'])).toMatch(/cut\.ova: ends in the middle of the tar \(truncated: the package is incomplete\)$/);

    // Checked once for all of them: any of them leaving something would show here.
    await nothingLeft();
    expect((await inProcessJson<{ clean: boolean }>(home, ['pool', 'check', 'q'])).clean).toBe(true);
  });

  it('takes a --package or --disk-format that is not one of its choices as a usage error (exit 2), writing nothing', () => {
    for (const bad of [['--package', 'zip'], ['--disk-format', 'vhdx']]) {
      const dest = path.join(dir, `usage-${bad[1]!}.ova`);
      const r = strata(home, ['template', 'export', 'p/web', dest, ...bad]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`argument '${bad[1]!}' is invalid. Allowed choices are`);
      expect(fs.existsSync(dest)).toBe(false);
    }
  });
});
