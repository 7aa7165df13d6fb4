import type { DiskFormat } from '../image/image-reader.js';
import { unitBytes } from './allocation-units.js';
import { PackageError, UnsupportedPackageError } from './errors.js';
import { checkHref } from './href.js';
import { diskFileFormat, EPASD, nicModelFromOvf, OVF_NS, RASD, SASD, VBOX, VMW, VSSD, XSI } from './ovf-names.js';
import { normaliseBootOrder, validateSettings, type DiskBus, type DiskSettings, type Firmware, type NetworkSettings, type TemplateSettings } from './settings.js';
import { attrOf, childNamed, childrenNamed, parseXml, type XmlElement } from './xml-tree.js';

/** A References/File: one file of the package. */
export interface OvfFile {
  id: string;
  href: string;
  /** Bytes of the file as stored (for a chunked file, of all its chunks); null when not given. */
  size: number | null;
  compression: 'gzip' | null;
  /** Bytes of each chunk (`href.000000000`, …) when the file is split; null: one file. */
  chunkSize: number | null;
}

/** A DiskSection/Disk, with its file when it has one (a disk without is created empty). */
export interface OvfDisk {
  diskId: string;
  /** The name the settings give it. */
  name: string;
  file: OvfFile | null;
  capacity: number;
  format: DiskFormat | null;
  subformat: string | null;
  formatUri: string | null;
}

export interface OvfDescriptor {
  /** 1 or 2, from the envelope's namespace. */
  version: 1 | 2;
  files: OvfFile[];
  disks: OvfDisk[];
  settings: TemplateSettings;
  /** What the descriptor holds that Strata keeps no setting for (CD-ROMs, USB, sound), one line each. */
  notes: string[];
}

/** OVF's namespaces, and none: oVirt binds only the `ovf:` prefix, so its unprefixed elements are in no namespace. */
const NS: readonly string[] = [...OVF_NS, ''];
const ITEM_NS = [RASD, SASD, EPASD];

/** An item property (rasd:X, sasd:X, epasd:X), trimmed; oVirt writes InstanceId for InstanceID. */
function prop(item: XmlElement, name: string): string | undefined {
  const el = item.children.find((c) => ITEM_NS.includes(c.ns) && (c.local === name || (name === 'InstanceID' && c.local === 'InstanceId')));
  return el?.text.trim();
}

/**
 * The sections of `parent` of one type: `<X>` or oVirt's
 * `<Section xsi:type="ovf:X_Type">`.
 */
function sections(parent: XmlElement, type: string): XmlElement[] {
  return parent.children.filter((c) => {
    if (!NS.includes(c.ns)) return false;
    if (c.local === type) return true;
    const t = c.attrs.get(`{${XSI}}type`);
    return c.local === 'Section' && t !== undefined && t.slice(t.indexOf(':') + 1) === `${type}_Type`;
  });
}

function section(parent: XmlElement, type: string): XmlElement | undefined {
  return sections(parent, type)[0];
}

function nonNegative(text: string | undefined, what: string, file: string): number | null {
  if (text === undefined || text.trim() === '') return null;
  if (!/^\d+$/.test(text.trim())) throw new PackageError(file, `${what} is '${text}', not a whole number`);
  const n = Number(text.trim());
  if (!Number.isSafeInteger(n)) throw new PackageError(file, `${what} is ${text}, too large`);
  return n;
}

function scaled(quantity: number, units: string | undefined, fallback: number, what: string, file: string): number {
  const factor = units === undefined || units.trim() === '' ? fallback : unitBytes(units);
  if (factor === null) throw new UnsupportedPackageError(file, `${what} in units '${units}'`);
  const bytes = quantity * factor;
  if (!Number.isSafeInteger(bytes)) throw new PackageError(file, `${what} of ${quantity} × ${factor} bytes is too large`);
  return bytes;
}

function readFiles(envelope: XmlElement, file: string): OvfFile[] {
  const refs = childNamed(envelope, NS, 'References');
  const files = refs ? childrenNamed(refs, NS, 'File') : [];
  const ids = new Set<string>();
  return files.map((f) => {
    const id = attrOf(f, NS, 'id');
    const href = attrOf(f, NS, 'href');
    if (!id) throw new PackageError(file, 'a References/File has no ovf:id');
    if (!href) throw new PackageError(file, `File ${id} has no ovf:href`);
    if (ids.has(id)) throw new PackageError(file, `two References/File elements have the id '${id}'`);
    ids.add(id);
    checkHref(href, file);
    const compression = attrOf(f, NS, 'compression');
    if (compression !== undefined && compression !== '' && compression !== 'identity' && compression !== 'gzip') throw new UnsupportedPackageError(file, `File ${id}: the compression '${compression}'`);
    const chunkSize = nonNegative(attrOf(f, NS, 'chunkSize'), `File ${id}: ovf:chunkSize`, file);
    if (chunkSize === 0) throw new PackageError(file, `File ${id}: ovf:chunkSize is 0`);
    return { id, href, size: nonNegative(attrOf(f, NS, 'size'), `File ${id}: ovf:size`, file), compression: compression === 'gzip' ? 'gzip' : null, chunkSize };
  });
}

interface DiskEntry {
  disk: OvfDisk;
  /** oVirt's ovf:disk-interface and ovf:boot, where it says them on the Disk. */
  bus: DiskBus | null;
  boot: boolean;
}

const OVIRT_BUS: Record<string, DiskBus> = { virtio: 'virtio', virtio_scsi: 'scsi', ide: 'ide', sata: 'sata', spapr_vscsi: 'scsi' };

function readDisks(envelope: XmlElement, files: OvfFile[], file: string): DiskEntry[] {
  const sec = section(envelope, 'DiskSection');
  if (!sec) return [];
  const byId = new Map(files.map((f) => [f.id, f]));
  const seen = new Set<string>();
  return childrenNamed(sec, NS, 'Disk').map((d) => {
    const diskId = attrOf(d, NS, 'diskId');
    if (!diskId) throw new PackageError(file, 'a DiskSection/Disk has no ovf:diskId');
    if (seen.has(diskId)) throw new PackageError(file, `two disks have the id '${diskId}'`);
    seen.add(diskId);
    const fileRef = attrOf(d, NS, 'fileRef');
    // oVirt's fileRef is the file's href (group/image) rather than its id.
    const f = fileRef ? (byId.get(fileRef) ?? files.find((x) => x.href === fileRef)) : undefined;
    if (fileRef && !f) throw new PackageError(file, `disk ${diskId} refers to the file '${fileRef}', which References does not list`);
    const parentRef = attrOf(d, NS, 'parentRef');
    if (parentRef) throw new UnsupportedPackageError(file, `disk ${diskId}: a delta disk (ovf:parentRef '${parentRef}')`);
    let capacity = nonNegative(attrOf(d, NS, 'capacity'), `disk ${diskId}: ovf:capacity`, file);
    let units = attrOf(d, NS, 'capacityAllocationUnits');
    // oVirt gives the virtual size in ovf:size, in GiB, and sometimes no ovf:capacity.
    if (capacity === null) {
      capacity = nonNegative(attrOf(d, NS, 'size'), `disk ${diskId}: ovf:size`, file);
      units = 'byte * 2^30';
    }
    if (capacity === null || capacity === 0) throw new PackageError(file, `disk ${diskId} has no capacity`);
    const uri = attrOf(d, NS, 'format');
    const fmt = diskFileFormat(uri, attrOf(d, NS, 'volume-format'));
    if (f && fmt === null) throw new UnsupportedPackageError(file, `disk ${diskId}: the disk format '${uri ?? '(none given)'}'`);
    const iface = attrOf(d, NS, 'disk-interface')?.toLowerCase();
    return {
      disk: {
        diskId,
        name: diskId,
        file: f ?? null,
        capacity: scaled(capacity, units, 1, `disk ${diskId}: the capacity`, file),
        format: fmt?.format ?? null,
        subformat: fmt?.subformat ?? null,
        formatUri: uri ?? null,
      },
      bus: iface !== undefined ? (OVIRT_BUS[iface] ?? null) : null,
      boot: attrOf(d, NS, 'boot') === 'true',
    };
  });
}

function controllerBus(item: XmlElement): DiskBus | null {
  const type = prop(item, 'ResourceType');
  const sub = prop(item, 'ResourceSubType') ?? '';
  if (/virtio/i.test(sub)) return 'virtio';
  if (type === '5') return 'ide';
  if (type === '6') return 'scsi';
  if (type === '20') return /nvme/i.test(sub) ? null : 'sata';
  return null;
}

/** The disk a ResourceType 17 item attaches: `ovf:/disk/ID` (VMware), `/disk/ID` (VirtualBox), `ovf:/file/ID` (OVF 0.9), or a file reference (oVirt). */
function hostDisk(host: string, disks: DiskEntry[]): DiskEntry | undefined {
  const m = /^(?:ovf:)?\/disk\/(.+)$/.exec(host);
  if (m) return disks.find((d) => d.disk.diskId === m[1]);
  // OVF 0.9 tools attached the file: ovf:/file/ID.
  const f = /^(?:ovf:)?\/file\/(.+)$/.exec(host);
  if (f) return disks.find((d) => d.disk.file?.id === f[1]);
  return disks.find((d) => d.disk.file?.id === host || d.disk.file?.href === host || d.disk.diskId === host);
}

/** VirtualBox keeps firmware and more in its own vbox:Machine; it is the only part of it read here. */
function vboxFirmware(system: XmlElement): Firmware | null {
  const machine = childNamed(system, [VBOX], 'Machine');
  if (!machine) return null;
  const find = (el: XmlElement): XmlElement | undefined => (el.local === 'Firmware' ? el : el.children.map(find).find((x) => x !== undefined));
  const fw = find(machine);
  const type = fw?.attrs.get('type');
  return type === undefined ? null : /efi/i.test(type) ? 'efi' : 'bios';
}

function firmwareOf(system: XmlElement, hardware: XmlElement): Firmware {
  for (const c of childrenNamed(hardware, [VMW], 'Config')) {
    if (attrOf(c, [VMW], 'key') === 'firmware') return attrOf(c, [VMW], 'value') === 'efi' ? 'efi' : 'bios';
  }
  // oVirt's BiosType: 3 and 4 are Q35 with OVMF (UEFI, secure boot).
  const bios = system.children.find((c) => c.local === 'BiosType')?.text.trim();
  if (bios === '3' || bios === '4') return 'efi';
  return vboxFirmware(system) ?? 'bios';
}

/**
 * Parses an OVF descriptor (1.x or 2.x, any prefixes) into its files,
 * disks and template settings. `file` names it in errors; `kind` is the
 * package it came in. A VirtualSystemCollection (several VMs) is refused.
 */
export function parseOvf(text: string, file: string, kind: 'ova' | 'ovf'): OvfDescriptor {
  const envelope = parseXml(text, file);
  if (envelope.local !== 'Envelope' || !(OVF_NS as readonly string[]).includes(envelope.ns)) throw new PackageError(file, `is not an OVF descriptor (its root is {${envelope.ns}}${envelope.local}, not an OVF Envelope)`);
  const version = envelope.ns.endsWith('/2') ? 2 : 1;
  const notes: string[] = [];
  if (childNamed(envelope, NS, 'VirtualSystemCollection') || sections(envelope, 'VirtualSystemCollection').length > 0) {
    throw new UnsupportedPackageError(file, 'a VirtualSystemCollection (a package of several virtual machines; import each VM as its own package)');
  }
  const systems = childrenNamed(envelope, NS, 'VirtualSystem');
  if (systems.length !== 1) throw new PackageError(file, systems.length === 0 ? 'has no VirtualSystem' : `has ${systems.length} VirtualSystem elements, one is allowed`);
  const system = systems[0]!;
  const files = readFiles(envelope, file);
  const disks = readDisks(envelope, files, file);
  const hardware = section(system, 'VirtualHardwareSection');
  if (!hardware) throw new PackageError(file, 'the VirtualSystem has no VirtualHardwareSection');

  const items = hardware.children.filter((c) => NS.includes(c.ns) && ['Item', 'StorageItem', 'EthernetPortItem'].includes(c.local));
  const byInstance = new Map<string, XmlElement>();
  for (const item of items) {
    const id = prop(item, 'InstanceID');
    if (id !== undefined) byInstance.set(id, item);
  }
  let cpus: number | null = null;
  let memory: number | null = null;
  const diskItems: { entry: DiskEntry; instance: string | undefined; bus: DiskBus; bootOrder: number | null }[] = [];
  const networks: NetworkSettings[] = [];
  for (const item of items) {
    const type = prop(item, 'ResourceType');
    const label = prop(item, 'ElementName') ?? prop(item, 'Caption') ?? `item ${prop(item, 'InstanceID') ?? '?'}`;
    switch (type) {
      case '3':
        cpus = nonNegative(prop(item, 'VirtualQuantity'), 'the CPU item: VirtualQuantity', file);
        break;
      case '4': {
        const q = nonNegative(prop(item, 'VirtualQuantity'), 'the memory item: VirtualQuantity', file);
        if (q !== null) memory = scaled(q, prop(item, 'AllocationUnits'), 2 ** 20, 'the memory', file);
        break;
      }
      case '10': {
        const connection = prop(item, 'Connection');
        networks.push({ name: connection !== undefined && connection !== '' ? connection : label, model: nicModelFromOvf(prop(item, 'ResourceSubType')) });
        break;
      }
      case '17': {
        const host = prop(item, 'HostResource');
        if (host === undefined || host === '') {
          notes.push(`${label}: a disk drive with no disk, left out`);
          break;
        }
        const entry = hostDisk(host, disks);
        if (!entry) throw new PackageError(file, `${label} attaches '${host}', which is no disk of the DiskSection`);
        const parent = prop(item, 'Parent');
        const controller = parent !== undefined ? byInstance.get(parent) : undefined;
        const order = item.children.find((c) => c.local === 'BootOrder')?.text.trim();
        diskItems.push({
          entry,
          instance: prop(item, 'InstanceID'),
          bus: entry.bus ?? (controller ? controllerBus(controller) : null) ?? 'virtio',
          bootOrder: order !== undefined && /^\d+$/.test(order) && Number(order) > 0 ? Number(order) : null,
        });
        break;
      }
      case '5':
      case '6':
      case '20':
        break;
      default:
        if (type !== undefined && !['1', '23', '24', '35'].includes(type)) notes.push(`${label} (ResourceType ${type}) has no Strata setting, left out`);
    }
  }
  // VMware's boot order: one vmw:BootOrderSection per device, first boots first.
  const bootSections = childrenNamed(system, [VMW], 'BootOrderSection').filter((s) => attrOf(s, [VMW], 'type') === 'disk');
  bootSections.forEach((s, i) => {
    const d = diskItems.find((x) => x.instance !== undefined && x.instance === attrOf(s, [VMW], 'instanceId'));
    if (d) d.bootOrder = i + 1;
  });
  disks.forEach((d, i) => {
    const attached = diskItems.find((x) => x.entry === d);
    if (!attached) {
      notes.push(`disk ${d.disk.diskId} is attached by no item; it comes in on the virtio bus`);
      diskItems.push({ entry: d, instance: undefined, bus: d.bus ?? 'virtio', bootOrder: null });
    }
    const item = diskItems.find((x) => x.entry === d)!;
    if (d.boot && item.bootOrder === null) item.bootOrder = i + 1;
  });
  if (diskItems.length > 0 && diskItems.every((d) => d.bootOrder === null)) diskItems[0]!.bootOrder = 1;
  const ordered = diskItems.map((d) => d.entry.disk);
  const diskSettings: DiskSettings[] = normaliseBootOrder(diskItems.map((d) => ({ name: d.entry.disk.name, capacity: d.entry.disk.capacity, bus: d.bus, bootOrder: d.bootOrder })));

  const os = section(system, 'OperatingSystemSection');
  // The CIM number; oVirt puts the VM's UUID there instead, which says nothing of the OS.
  const osIdText = os ? attrOf(os, NS, 'id')?.trim() : undefined;
  const osId = osIdText !== undefined && /^\d{1,5}$/.test(osIdText) ? Number(osIdText) : null;
  const osType = os ? (attrOf(os, [VMW], 'osType') ?? os.children.find((c) => c.ns === VBOX && c.local === 'OSType')?.text.trim()) : undefined;
  const osDescription = os ? childNamed(os, NS, 'Description')?.text.trim() : undefined;
  const annotation = section(system, 'AnnotationSection');
  // oVirt writes the VM's comment as the VirtualSystem's own Description.
  const description = (annotation ? childNamed(annotation, NS, 'Annotation')?.text.trim() : undefined) || childNamed(system, NS, 'Description')?.text.trim();
  const system0 = childNamed(hardware, NS, 'System');
  const identifier = system0?.children.find((c) => c.ns === VSSD && c.local === 'VirtualSystemIdentifier')?.text.trim();
  const name = childNamed(system, NS, 'Name')?.text.trim() || attrOf(system, NS, 'id') || identifier;
  if (!name) throw new PackageError(file, 'the VirtualSystem has no name (no Name, ovf:id or VirtualSystemIdentifier)');
  if (cpus === null || cpus === 0) throw new PackageError(file, 'the VirtualHardwareSection gives no CPU count (an Item of ResourceType 3)');
  if (memory === null || memory === 0) throw new PackageError(file, 'the VirtualHardwareSection gives no memory size (an Item of ResourceType 4)');

  const settings = validateSettings({
    name,
    description: description || null,
    os: { ovfId: osId, osType: osType || null, osinfo: null, description: osDescription || null },
    cpus,
    memoryBytes: memory,
    firmware: firmwareOf(system, hardware),
    disks: diskSettings,
    networks,
    source: kind,
  });
  const unused = files.filter((f) => !ordered.some((d) => d.file === f));
  for (const f of unused) notes.push(`file ${f.href} is no disk's file (an ISO, NVRAM or other), left out`);
  return { version, files, disks: ordered, settings, notes };
}
