import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { unitBytes } from '../../src/package/allocation-units.js';
import { PackageError, SettingsError, UnsupportedPackageError } from '../../src/package/errors.js';
import { parseOvf } from '../../src/package/ovf-descriptor.js';
import { writeOvf } from '../../src/package/ovf-write.js';
import { settingsFromJson, settingsToJson, validateSettings, type TemplateSettings } from '../../src/package/settings.js';
import { propertyRuns } from '../support/scratch.js';
import { oVirt, virtualBox7, vmwareOvftool } from './descriptor-fixtures.js';
import { settingsWith } from './package-support.js';

const GiB = 2 ** 30;

describe('OVF descriptors as tools write them', () => {
  it('VirtualBox 7 (OVF 2.0, StorageItem, /disk/ID, MegaBytes, vbox:Machine firmware)', () => {
    const d = parseOvf(virtualBox7(), 'vbox.ovf', 'ova');
    expect(d.version).toBe(2);
    expect(d.settings).toEqual({
      name: 'ubuntu-22.04',
      description: 'Build box & CI runner',
      os: { ovfId: 94, osType: 'Ubuntu_64', osinfo: null, description: 'Ubuntu_64' },
      cpus: 2,
      memoryBytes: 4 * GiB,
      firmware: 'efi',
      disks: [{ name: 'vmdisk1', capacity: 25 * GiB, bus: 'sata', bootOrder: 1 }],
      networks: [{ name: 'NAT', model: 'e1000' }],
      source: 'ova',
    });
    expect(d.disks[0]).toMatchObject({ format: 'vmdk', subformat: 'streamOptimized', file: { href: 'ubuntu-disk001.vmdk', size: 1048576, compression: null, chunkSize: null } });
    expect(d.notes).toEqual(['cdrom1 (ResourceType 15) has no Strata setting, left out']);
  });

  it('VMware ovftool (OVF 1.0, ovf:/disk/ID, byte * 2^30, vmw:osType, firmware and boot order as vmw: elements)', () => {
    const one = parseOvf(vmwareOvftool(), 'vm.ovf', 'ovf');
    expect(one.version).toBe(1);
    expect(one.settings).toMatchObject({ name: 'web01', cpus: 4, memoryBytes: 8 * GiB, firmware: 'efi', os: { ovfId: 94, osType: 'ubuntu64Guest' }, networks: [{ name: 'VM Network', model: 'vmxnet3' }], source: 'ovf' });
    expect(one.settings.disks).toEqual([{ name: 'vmdisk1', capacity: 16 * GiB, bus: 'scsi', bootOrder: 1 }]);
    const two = parseOvf(
      vmwareOvftool([
        { href: 'a.vmdk', size: 10, capacityGiB: 1 },
        { href: 'b.vmdk', size: 20, capacityGiB: 2 },
      ]),
      'vm.ovf',
      'ova',
    );
    // The BootOrderSection names the second disk's item.
    expect(two.settings.disks.map((d) => [d.name, d.capacity, d.bootOrder])).toEqual([
      ['vmdisk1', GiB, null],
      ['vmdisk2', 2 * GiB, 1],
    ]);
  });

  it('oVirt (ovf: root with the 1/ URI, Section xsi:type, InstanceId, qcow2 as volume-format COW, size in GiB)', () => {
    const d = parseOvf(oVirt(), 'ovirt.ovf', 'ova');
    expect(d.settings).toMatchObject({ name: 'rhel8', description: 'RHEL 8 golden image', cpus: 2, memoryBytes: 4 * GiB, firmware: 'efi', os: { ovfId: null, description: 'rhel_8x64' }, networks: [{ name: 'ovirtmgmt', model: 'virtio' }] });
    expect(d.settings.disks).toEqual([{ name: '0d1c2b3a-4e5f-6a7b-8c9d-0e1f2a3b4c5d', capacity: 10 * GiB, bus: 'scsi', bootOrder: 1 }]);
    expect(d.disks[0]).toMatchObject({ format: 'qcow2', file: { href: '6ee4b7a8-6a5b-4a0e-8f7e-1c2d3e4f5a6b/0d1c2b3a-4e5f-6a7b-8c9d-0e1f2a3b4c5d' } });
  });

  it('prefixes are whatever the file binds: the same descriptor with other prefixes reads the same', () => {
    const renamed = vmwareOvftool()
      .replace(/xmlns:rasd=/, 'xmlns:r=')
      .replace(/rasd:/g, 'r:')
      .replace(/xmlns="http:\/\/schemas.dmtf.org\/ovf\/envelope\/1"/, 'xmlns:e="http://schemas.dmtf.org/ovf/envelope/1"')
      .replace(/<(\/?)(?=[A-Z])/g, '<$1e:');
    expect(parseOvf(renamed, 'x.ovf', 'ovf').settings).toEqual(parseOvf(vmwareOvftool(), 'x.ovf', 'ovf').settings);
    // OVF 0.9's ovf:/file/ID attaches the same disk.
    expect(parseOvf(vmwareOvftool().replace('ovf:/disk/vmdisk1', 'ovf:/file/file1'), 'x.ovf', 'ovf').settings).toEqual(parseOvf(vmwareOvftool(), 'x.ovf', 'ovf').settings);
  });

  it('refuses what it cannot read, naming it', () => {
    expect(() => parseOvf('<Envelope><x></Envelope>', 'bad.ovf', 'ova')).toThrow(/bad\.ovf: is not well-formed XML: .*line 1/);
    expect(() => parseOvf('<!DOCTYPE x [<!ENTITY a "b">]><Envelope/>', 'dtd.ovf', 'ova')).toThrow(/has a DOCTYPE/);
    expect(() => parseOvf('<domain/>', 'd.ovf', 'ova')).toThrow(/is not an OVF descriptor/);
    expect(() => parseOvf(vmwareOvftool().replace('ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"', 'ovf:format="http://example.com/vdi"'), 'f.ovf', 'ova')).toThrow(UnsupportedPackageError);
    expect(() => parseOvf(vmwareOvftool().replace('ovf:capacityAllocationUnits="byte * 2^30"', 'ovf:capacityAllocationUnits="hertz"'), 'f.ovf', 'ova')).toThrow(/disk vmdisk1: the capacity in units 'hertz' is not supported/);
    expect(() => parseOvf(vmwareOvftool().replace('ovf:href="web-disk1.vmdk"', 'ovf:href="../../etc/shadow"'), 'f.ovf', 'ova')).toThrow(PackageError);
    expect(() => parseOvf(vmwareOvftool().replace('ovf:fileRef="file1"', 'ovf:fileRef="file9"'), 'f.ovf', 'ova')).toThrow(/refers to the file 'file9', which References does not list/);
    expect(() => parseOvf(vmwareOvftool().replace('ovf:id="file1"', 'ovf:id="file1" ovf:compression="bzip2"'), 'f.ovf', 'ova')).toThrow(/the compression 'bzip2' is not supported/);
    expect(() => parseOvf(vmwareOvftool().replace(/<rasd:ResourceType>3<\/rasd:ResourceType>/, '<rasd:ResourceType>99</rasd:ResourceType>'), 'f.ovf', 'ova')).toThrow(/gives no CPU count/);
  });

  it('reads the units DMTF and older tools write', () => {
    expect(unitBytes('byte * 2^30')).toBe(GiB);
    expect(unitBytes('byte*2^20')).toBe(2 ** 20);
    expect(unitBytes('byte * 10^9')).toBe(1e9);
    expect(unitBytes('MegaBytes')).toBe(2 ** 20);
    expect(unitBytes('GB')).toBe(GiB);
    expect(unitBytes('byte')).toBe(1);
    expect(unitBytes('hertz * 10^6')).toBeNull();
  });
});

describe('template settings', () => {
  it('validation names the field', () => {
    const good = settingsWith([GiB]);
    expect(() => validateSettings({ ...good, cpus: 0 })).toThrow(SettingsError);
    expect(() => validateSettings({ ...good, cpus: 0 })).toThrow('template settings: cpus is 0, outside 1..4096');
    expect(() => validateSettings({ ...good, disks: [{ ...good.disks[0], bus: 'usb' }] })).toThrow('template settings: disks[0].bus must be one of virtio, scsi, ide, sata');
    expect(() => validateSettings({ ...good, name: 'x'.repeat(300) })).toThrow('template settings: name is 300 characters, more than 255');
    expect(() => validateSettings({ ...good, disks: [good.disks[0], good.disks[0]] })).toThrow("disks[1].name 'disk1' names two disks");
    expect(() => settingsFromJson('{')).toThrow(/settings are not JSON/);
    expect(settingsFromJson(settingsToJson(good))).toEqual(good);
  });

  const name = fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/);
  const text = fc.string({ minLength: 1, maxLength: 40 }).filter((s) => s.trim() === s && s.length > 0 && !/[\u0000-\u001f]/.test(s));
  const settings: fc.Arbitrary<TemplateSettings> = fc
    .record({
      name: text,
      description: fc.option(text, { nil: null }),
      os: fc.record({ ovfId: fc.integer({ min: 0, max: 200 }), osType: fc.option(name, { nil: null }), osinfo: fc.constant(null), description: fc.option(text, { nil: null }) }),
      cpus: fc.integer({ min: 1, max: 256 }),
      memoryBytes: fc.oneof(fc.integer({ min: 1, max: 1 << 20 }).map((m) => m * 2 ** 20), fc.integer({ min: 1024, max: 2 ** 31 }).map((k) => k * 1024)),
      firmware: fc.constantFrom('bios' as const, 'efi' as const),
      disks: fc.uniqueArray(fc.record({ name, capacity: fc.oneof(fc.integer({ min: 1, max: 2 ** 40 }), fc.integer({ min: 1, max: 4096 }).map((g) => g * GiB)), bus: fc.constantFrom('virtio' as const, 'scsi' as const, 'ide' as const, 'sata' as const), boot: fc.boolean() }), { maxLength: 5, selector: (d) => d.name }),
      networks: fc.array(fc.record({ name: text, model: fc.option(fc.constantFrom('virtio', 'e1000', 'vmxnet3', 'rtl8139', 'e1000e'), { nil: null }) }), { maxLength: 3 }),
    })
    .map((s) => {
      let order = 0;
      const disks = s.disks.map((d) => ({ name: d.name, capacity: d.capacity, bus: d.bus, bootOrder: d.boot ? ++order : null }));
      // With no disk in the boot order, OVF's reader boots the first, as importers do.
      if (order === 0 && disks.length > 0) disks[0]!.bootOrder = 1;
      return { ...s, disks, source: 'ova' as const };
    });

  it('survive an OVF write and parse unchanged (property)', () => {
    fc.assert(
      fc.property(settings, (s) => {
        const files = s.disks.map((d, i) => ({ disk: d.name, href: `${s.name.length}-disk${i + 1}.vmdk`.replace(/[^a-z0-9.-]/gi, 'x'), size: 1000 + i, format: 'vmdk' as const, subformat: 'streamOptimized' }));
        const xml = writeOvf(s, files);
        const back = parseOvf(xml, 'written.ovf', 'ova');
        expect(back.settings).toEqual(s);
        expect(back.disks.map((d) => d.file?.href)).toEqual(files.map((f) => f.href));
        expect(back.notes).toEqual([]);
      }),
      { numRuns: propertyRuns(150, 50) },
    );
  });
});
