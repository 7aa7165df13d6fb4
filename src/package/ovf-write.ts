import type { DiskFormat } from '../image/image-reader.js';
import { bytesInUnits } from './allocation-units.js';
import { checkHref } from './href.js';
import { formatUri, nicModelToOvf, OVF1, RASD, VMW, VSSD, XSI, CIM } from './ovf-names.js';
import { validateSettings, type DiskBus, type TemplateSettings } from './settings.js';
import { xmlEscape as x } from './xml-tree.js';

/** A disk file the descriptor lists, for the settings disk of the same name. */
export interface OvfDiskFile {
  /** The settings disk it holds. */
  disk: string;
  href: string;
  /** Bytes of the file; null leaves ovf:size out (OVF makes it optional). */
  size: number | null;
  format: DiskFormat;
  subformat: string | null;
}

/** Controllers as VMware, VirtualBox and oVirt read them: ResourceType and ResourceSubType per bus. */
const CONTROLLERS: Record<DiskBus, { type: number; subtype: string; label: string }> = {
  ide: { type: 5, subtype: 'PIIX4', label: 'IDE Controller' },
  scsi: { type: 6, subtype: 'lsilogic', label: 'SCSI Controller' },
  sata: { type: 20, subtype: 'AHCI', label: 'SATA Controller' },
  // VirtualBox names its virtio-scsi controller so; others see a SCSI controller.
  virtio: { type: 6, subtype: 'VirtioSCSI', label: 'VirtIO Controller' },
};

const NCNAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/** One rasd Item; CIM's schema wants its elements in alphabetical order, and VMware checks. */
function item(fields: Record<string, string | number | undefined>, extra = ''): string {
  const body = Object.keys(fields)
    .filter((k) => fields[k] !== undefined)
    .sort()
    .map((k) => `        <rasd:${k}>${x(String(fields[k]))}</rasd:${k}>`)
    .join('\n');
  return `      <Item>\n${body}\n${extra}      </Item>`;
}

/**
 * An OVF 1.0 descriptor for `settings` with its disks in `files`, in the
 * shape VMware's ovftool writes (which VirtualBox and oVirt import too):
 * default namespace OVF, ovf:/rasd:/vssd: prefixes, capacities in whole GiB
 * where they are, firmware as vmw:Config, the boot order as
 * vmw:BootOrderSection. Disk ids are the disks' names where those are XML
 * names, `vmdisk1`, … otherwise.
 */
export function writeOvf(input: TemplateSettings, files: readonly OvfDiskFile[]): string {
  const settings = validateSettings(input);
  for (const f of files) checkHref(f.href, 'the descriptor written');
  const fileOf = new Map(files.map((f, i) => [f.disk, { ...f, id: `file${i + 1}` }]));
  const diskIds = settings.disks.map((d, i) => (NCNAME.test(d.name) && !/^(file|ctrl)\d+$/.test(d.name) ? d.name : `vmdisk${i + 1}`));
  const lines: string[] = [];
  lines.push('<?xml version="1.0" encoding="UTF-8"?>');
  lines.push(`<Envelope xmlns="${OVF1}" xmlns:cim="${CIM}" xmlns:ovf="${OVF1}" xmlns:rasd="${RASD}" xmlns:vmw="${VMW}" xmlns:vssd="${VSSD}" xmlns:xsi="${XSI}">`);
  lines.push('  <References>');
  for (const f of fileOf.values()) lines.push(`    <File ovf:href="${x(f.href)}" ovf:id="${f.id}"${f.size === null ? '' : ` ovf:size="${f.size}"`}/>`);
  lines.push('  </References>');
  if (settings.disks.length > 0) {
    lines.push('  <DiskSection>', '    <Info>Virtual disk information</Info>');
    settings.disks.forEach((d, i) => {
      const f = fileOf.get(d.name);
      const { quantity, units } = bytesInUnits(d.capacity);
      const ref = f ? ` ovf:fileRef="${f.id}" ovf:format="${x(formatUri(f.format, f.subformat))}"` : '';
      lines.push(`    <Disk ovf:capacity="${quantity}" ovf:capacityAllocationUnits="${units}" ovf:diskId="${diskIds[i]}"${ref}/>`);
    });
    lines.push('  </DiskSection>');
  }
  const networks = [...new Set(settings.networks.map((n) => n.name))];
  if (networks.length > 0) {
    lines.push('  <NetworkSection>', '    <Info>The list of logical networks</Info>');
    for (const n of networks) lines.push(`    <Network ovf:name="${x(n)}">`, `      <Description>The ${x(n)} network</Description>`, '    </Network>');
    lines.push('  </NetworkSection>');
  }
  lines.push(`  <VirtualSystem ovf:id="${x(settings.name)}">`, '    <Info>A virtual machine</Info>', `    <Name>${x(settings.name)}</Name>`);
  if (settings.description !== null) lines.push('    <AnnotationSection ovf:required="false">', '      <Info>A human-readable annotation</Info>', `      <Annotation>${x(settings.description)}</Annotation>`, '    </AnnotationSection>');
  const os = settings.os;
  lines.push(`    <OperatingSystemSection ovf:id="${os.ovfId ?? 1}"${os.osType === null ? '' : ` vmw:osType="${x(os.osType)}"`}>`, '      <Info>The kind of installed guest operating system</Info>');
  if (os.description !== null) lines.push(`      <Description>${x(os.description)}</Description>`);
  lines.push('    </OperatingSystemSection>');
  lines.push('    <VirtualHardwareSection>', '      <Info>Virtual hardware requirements</Info>', '      <System>');
  lines.push('        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>', '        <vssd:InstanceID>0</vssd:InstanceID>');
  lines.push(`        <vssd:VirtualSystemIdentifier>${x(settings.name)}</vssd:VirtualSystemIdentifier>`, '        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>', '      </System>');
  let instance = 1;
  lines.push(item({ AllocationUnits: 'hertz * 10^6', Description: 'Number of Virtual CPUs', ElementName: `${settings.cpus} virtual CPU(s)`, InstanceID: instance++, ResourceType: 3, VirtualQuantity: settings.cpus }));
  const mem = bytesInUnits(settings.memoryBytes, 20);
  lines.push(item({ AllocationUnits: mem.units, Description: 'Memory Size', ElementName: `${mem.quantity} ${mem.units === 'byte * 2^20' ? 'MB' : mem.units} of memory`, InstanceID: instance++, ResourceType: 4, VirtualQuantity: mem.quantity }));
  const controllers = new Map<DiskBus, { id: number; next: number }>();
  for (const bus of [...new Set(settings.disks.map((d) => d.bus))]) {
    const c = CONTROLLERS[bus];
    const id = instance++;
    controllers.set(bus, { id, next: 0 });
    lines.push(item({ Address: [...controllers.keys()].filter((b) => CONTROLLERS[b].type === c.type).length - 1, Description: c.label, ElementName: `${c.label} ${id}`, InstanceID: id, ResourceSubType: c.subtype, ResourceType: c.type }));
  }
  const diskInstance: number[] = [];
  settings.disks.forEach((d, i) => {
    const c = controllers.get(d.bus)!;
    diskInstance[i] = instance;
    lines.push(item({ AddressOnParent: c.next++, ElementName: `Hard disk ${i + 1}`, HostResource: `ovf:/disk/${diskIds[i]}`, InstanceID: instance++, Parent: c.id, ResourceType: 17 }));
  });
  settings.networks.forEach((n, i) => {
    const sub = n.model === null ? undefined : nicModelToOvf(n.model);
    lines.push(item({ AutomaticAllocation: 'true', Connection: n.name, Description: `${sub ?? 'Ethernet'} adapter on "${n.name}"`, ElementName: `Network adapter ${i + 1}`, InstanceID: instance++, ResourceSubType: sub, ResourceType: 10 }));
  });
  lines.push(`      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="${settings.firmware}"/>`);
  lines.push('    </VirtualHardwareSection>');
  const boot = settings.disks.map((d, i) => ({ order: d.bootOrder, instance: diskInstance[i]! })).filter((b) => b.order !== null);
  boot.sort((a, b) => a.order! - b.order!);
  for (const b of boot) lines.push(`    <vmw:BootOrderSection ovf:required="false" vmw:instanceId="${b.instance}" vmw:type="disk">`, '      <Info>Virtual hardware device boot order</Info>', '    </vmw:BootOrderSection>');
  lines.push('  </VirtualSystem>', '</Envelope>', '');
  return lines.join('\n');
}
