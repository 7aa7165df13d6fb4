import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { PackageError, UnsupportedPackageError } from '../../src/package/errors.js';
import { domainSettings, parseDomain, writeDomain } from '../../src/package/libvirt-domain.js';
import type { TemplateSettings } from '../../src/package/settings.js';
import { propertyRuns, scratchDir } from '../support/scratch.js';
import { settingsWith } from './package-support.js';

/** A domain as `virsh dumpxml` prints it (libvirt 9, a q35 guest made by virt-install), its disks made relative to the descriptor. */
function dumpxml(disk1 = 'web01.qcow2', disk2 = 'data.img'): string {
  return `<domain type='kvm' id='3'>
  <name>web01</name>
  <uuid>1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b</uuid>
  <title>Web front end</title>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://ubuntu.com/ubuntu/22.04"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <firmware>
      <feature enabled='no' name='enrolled-keys'/>
      <feature enabled='no' name='secure-boot'/>
    </firmware>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/web01_VARS.fd</nvram>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
  <clock offset='utc'>
    <timer name='rtc' tickpolicy='catchup'/>
  </clock>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='${disk1}' index='2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <boot order='2'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='${disk2}'/>
      <target dev='sda' bus='sata'/>
      <boot order='1'/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sdb' bus='sata'/>
      <readonly/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
    <interface type='network'>
      <mac address='52:54:00:6b:3c:58'/>
      <source network='default' portid='9a1b2c3d-0000-4000-8000-000000000000' bridge='virbr0'/>
      <target dev='vnet2'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:6b:3c:59'/>
      <source bridge='br0'/>
      <model type='e1000e'/>
    </interface>
    <console type='pty'/>
  </devices>
</domain>
`;
}

describe('libvirt domain XML', () => {
  const { dir, cleanup } = scratchDir('libvirt');
  afterAll(cleanup);
  const file = path.join(dir, 'web01.xml');

  it('reads settings and file disks from a virsh dumpxml descriptor, sources relative to its directory', () => {
    const d = parseDomain(dumpxml(), file);
    expect(d.settings).toEqual({
      name: 'web01',
      description: 'Web front end',
      os: { ovfId: null, osType: null, osinfo: 'http://ubuntu.com/ubuntu/22.04', description: null },
      cpus: 2,
      memoryBytes: 4 * 2 ** 30,
      firmware: 'efi',
      networks: [
        { name: 'default', model: 'virtio' },
        { name: 'br0', model: 'e1000e' },
      ],
      source: 'libvirt',
    });
    expect(d.disks).toEqual([
      { name: 'vda', file: path.join(dir, 'web01.qcow2'), nbd: null, format: 'qcow2', bus: 'virtio', bootOrder: 2, readOnly: false },
      { name: 'sda', file: path.join(dir, 'data.img'), nbd: null, format: 'raw', bus: 'sata', bootOrder: 1, readOnly: false },
    ]);
    expect(d.notes).toEqual(['currentMemory (2147483648 bytes) is below memory; the template keeps memory (4294967296 bytes)', 'the cdrom sdb is left out']);
    expect(domainSettings(d, (disk) => (disk.name === 'vda' ? 10 * 2 ** 30 : 2 ** 20)).disks).toEqual([
      { name: 'vda', capacity: 10 * 2 ** 30, bus: 'virtio', bootOrder: 2 },
      { name: 'sda', capacity: 2 ** 20, bus: 'sata', bootOrder: 1 },
    ]);
  });

  it('refuses disk sources leaving the directory unless the caller allows it', () => {
    expect(() => parseDomain(dumpxml('/var/lib/libvirt/images/web01.qcow2'), file)).toThrow(PackageError);
    expect(() => parseDomain(dumpxml('/var/lib/libvirt/images/web01.qcow2'), file)).toThrow(/disk vda: its source \/var\/lib\/libvirt\/images\/web01\.qcow2 is outside the descriptor's directory/);
    expect(() => parseDomain(dumpxml('../web01.qcow2'), file)).toThrow(/is outside the descriptor's directory/);
    // A symlink beside the descriptor that points out of it leaves too.
    fs.symlinkSync('/etc/hostname', path.join(dir, 'link.img'));
    expect(() => parseDomain(dumpxml('link.img'), file)).toThrow(/is outside the descriptor's directory/);
    expect(parseDomain(dumpxml('/var/lib/libvirt/images/web01.qcow2'), file, { allowOutside: true }).disks[0]!.file).toBe('/var/lib/libvirt/images/web01.qcow2');
    expect(parseDomain(dumpxml(path.join(dir, 'sub', 'web01.qcow2')), file).disks[0]!.file).toBe(path.join(dir, 'sub', 'web01.qcow2'));
  });

  it('refuses what it does not import, naming it', () => {
    expect(() => parseDomain(dumpxml().replace("<disk type='file' device='disk'>", "<disk type='block' device='disk'>"), file)).toThrow(UnsupportedPackageError);
    expect(() => parseDomain(dumpxml().replace("type='qcow2'", "type='qed'"), file)).toThrow(/disk vda: the disk format 'qed' is not supported/);
    expect(() => parseDomain(dumpxml().replace("bus='virtio'", "bus='usb'"), file)).toThrow(/disk vda: the bus 'usb' is not supported/);
    expect(() => parseDomain(dumpxml().replace("unit='KiB'>4194304", "unit='parsec'>4"), file)).toThrow(/<memory> in the unit 'parsec' is not supported/);
    expect(() => parseDomain('<Envelope/>', file)).toThrow(/is not a libvirt domain/);
  });

  it('writes a domain whose disks are NBD exports, as the disk element Strata writes; it reads back', () => {
    const s = settingsWith([2 ** 30, 2 ** 31], { firmware: 'efi', os: { ovfId: null, osType: null, osinfo: 'http://ubuntu.com/ubuntu/22.04', description: null } });
    s.disks[1]!.bus = 'scsi';
    const xml = writeDomain(s, [
      { disk: 'disk1', exportName: 'app01-clone/disk1' },
      { disk: 'disk2', exportName: 'app01-clone/disk2' },
    ], { host: '127.0.0.1', port: 10809 });
    expect(xml).toContain(["    <disk type='network' device='disk'>", "      <driver name='qemu' type='raw' discard='unmap'/>", "      <source protocol='nbd' name='app01-clone/disk1'>", "        <host name='127.0.0.1' port='10809'/>", '      </source>', "      <target dev='vda' bus='virtio'/>", "      <boot order='1'/>", '    </disk>'].join('\n'));
    expect(xml).toContain("<target dev='sda' bus='scsi'/>");
    expect(xml).toContain("<controller type='scsi' model='virtio-scsi'/>");
    const back = parseDomain(xml, file);
    expect(back.disks.map((d) => [d.name, d.nbd?.export, d.nbd?.port, d.bus])).toEqual([
      ['vda', 'app01-clone/disk1', 10809, 'virtio'],
      ['sda', 'app01-clone/disk2', 10809, 'scsi'],
    ]);
  });

  it('settings survive a domain write and parse, but the disk names, which become device names (property)', () => {
    const text = fc.string({ minLength: 1, maxLength: 30 }).filter((t) => t.trim() === t && !/[\u0000-\u001f]/.test(t));
    const arb: fc.Arbitrary<TemplateSettings> = fc.record({
      name: text,
      description: fc.option(text, { nil: null }),
      os: fc.record({ ovfId: fc.constant(null), osType: fc.constant(null), osinfo: fc.option(fc.constantFrom('http://ubuntu.com/ubuntu/22.04', 'http://redhat.com/rhel/9.2', 'http://microsoft.com/win/11'), { nil: null }), description: fc.constant(null) }),
      cpus: fc.integer({ min: 1, max: 512 }),
      memoryBytes: fc.integer({ min: 1024, max: 2 ** 32 }).map((k) => k * 1024),
      firmware: fc.constantFrom('bios' as const, 'efi' as const),
      disks: fc.array(fc.record({ capacity: fc.integer({ min: 1, max: 2 ** 40 }), bus: fc.constantFrom('virtio' as const, 'scsi' as const, 'ide' as const, 'sata' as const) }), { maxLength: 4 }).map((ds) => ds.map((d, i) => ({ name: `d${i}`, ...d, bootOrder: i === 0 ? 1 : null }))),
      networks: fc.array(fc.record({ name: text, model: fc.option(fc.constantFrom('virtio', 'e1000'), { nil: null }) }), { maxLength: 3 }),
      source: fc.constant('libvirt' as const),
    });
    fc.assert(
      fc.property(arb, (s) => {
        const xml = writeDomain(s, s.disks.map((d) => ({ disk: d.name, exportName: `t/${d.name}` })), { socket: '/run/strata.sock' });
        const back = parseDomain(xml, file);
        const capacities = new Map(back.disks.map((d, i) => [d.name, s.disks[i]!.capacity]));
        const got = domainSettings(back, (d) => capacities.get(d.name)!);
        expect({ ...got, disks: got.disks.map((d) => ({ ...d, name: '' })) }).toEqual({ ...s, disks: s.disks.map((d) => ({ ...d, name: '' })) });
        expect(back.disks.map((d) => d.nbd?.export)).toEqual(s.disks.map((d) => `t/${d.name}`));
      }),
      { numRuns: propertyRuns(100, 40) },
    );
  });
});
