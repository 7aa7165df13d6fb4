import fs from 'node:fs';
import path from 'node:path';
import type { DiskFormat } from '../image/image-reader.js';
import { libvirtDiskXml } from '../nbd/libvirt-disk.js';
import type { ListenAddress } from '../nbd/server.js';
import { bytesInUnits } from './allocation-units.js';
import { PackageError, UnsupportedPackageError } from './errors.js';
import { normaliseBootOrder, validateSettings, DISK_BUSES, type DiskBus, type Firmware, type NetworkSettings, type TemplateSettings } from './settings.js';
import { childNamed, childrenNamed, parseXml, xmlEscape as x, type XmlElement } from './xml-tree.js';

export const LIBOSINFO_NS = 'http://libosinfo.org/xmlns/libvirt/domain/1.0';

/** A disk of a domain: a file (what is imported), or an NBD export (what Strata's export writes). */
export interface LibvirtDisk {
  /** The guest device (target dev): vda, sdb. */
  name: string;
  /** The file, resolved to an absolute path; null for an NBD disk. */
  file: string | null;
  nbd: { export: string; host: string | null; port: number | null; socket: string | null } | null;
  /** From `<driver type>`; null when not given (the file's magic says it). */
  format: DiskFormat | null;
  bus: DiskBus;
  bootOrder: number | null;
  readOnly: boolean;
}

/** A domain XML read: its settings but the disk capacities (the images hold those), its disks, what was left out. */
export interface LibvirtDescriptor {
  settings: Omit<TemplateSettings, 'disks'>;
  disks: LibvirtDisk[];
  notes: string[];
}

export interface ParseDomainOptions {
  /**
   * Disk files outside the descriptor's directory (absolute paths as
   * `virsh dumpxml` writes them, `..`) are refused unless this is true:
   * importing a template reads only what its package holds, unless the
   * user says otherwise.
   */
  allowOutside?: boolean;
}

/** libvirt's memory units (domain XML reference, "Memory Allocation"); a bare number is KiB. */
const MEMORY_UNITS: Record<string, number> = {
  b: 1,
  bytes: 1,
  kb: 1e3,
  k: 2 ** 10,
  kib: 2 ** 10,
  mb: 1e6,
  m: 2 ** 20,
  mib: 2 ** 20,
  gb: 1e9,
  g: 2 ** 30,
  gib: 2 ** 30,
  tb: 1e12,
  t: 2 ** 40,
  tib: 2 ** 40,
};

const DRIVER_FORMATS: Record<string, DiskFormat> = { raw: 'raw', qcow2: 'qcow2', vmdk: 'vmdk', vpc: 'vhd', vhdx: 'vhdx' };

function memory(el: XmlElement | undefined, file: string, what: string): number | null {
  if (!el) return null;
  const unit = (el.attrs.get('unit') ?? 'KiB').toLowerCase();
  const factor = MEMORY_UNITS[unit];
  if (factor === undefined) throw new UnsupportedPackageError(file, `<${what}> in the unit '${unit}'`);
  if (!/^\d+$/.test(el.text.trim())) throw new PackageError(file, `<${what}> is '${el.text}', not a whole number`);
  const bytes = Number(el.text.trim()) * factor;
  if (!Number.isSafeInteger(bytes)) throw new PackageError(file, `<${what}> is too large`);
  return bytes;
}

/** Whether `target` lies inside `dir`, symlinks resolved where the path exists. */
function inside(dir: string, target: string): boolean {
  const real = (p: string): string => {
    try {
      return fs.realpathSync(p);
    } catch {
      return path.resolve(p);
    }
  };
  const rel = path.relative(real(dir), real(target));
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

function diskOf(el: XmlElement, dir: string, file: string, opts: ParseDomainOptions): LibvirtDisk {
  const type = el.attrs.get('type') ?? 'file';
  const target = childNamed(el, [''], 'target');
  const name = target?.attrs.get('dev');
  if (!name) throw new PackageError(file, 'a <disk> has no <target dev>');
  const busName = target?.attrs.get('bus') ?? (name.startsWith('vd') ? 'virtio' : name.startsWith('hd') ? 'ide' : 'scsi');
  if (!(DISK_BUSES as readonly string[]).includes(busName)) throw new UnsupportedPackageError(file, `disk ${name}: the bus '${busName}'`);
  const driverType = childNamed(el, [''], 'driver')?.attrs.get('type');
  const format = driverType === undefined ? null : (DRIVER_FORMATS[driverType] ?? null);
  if (driverType !== undefined && format === null) throw new UnsupportedPackageError(file, `disk ${name}: the disk format '${driverType}'`);
  const order = childNamed(el, [''], 'boot')?.attrs.get('order');
  const source = childNamed(el, [''], 'source');
  const base = { name, format, bus: busName as DiskBus, bootOrder: order !== undefined && /^\d+$/.test(order) && Number(order) > 0 ? Number(order) : null, readOnly: childNamed(el, [''], 'readonly') !== undefined };
  if (type === 'network') {
    const protocol = source?.attrs.get('protocol');
    if (protocol !== 'nbd') throw new UnsupportedPackageError(file, `disk ${name}: a network disk over '${protocol ?? '(no protocol)'}'`);
    const host = source ? childNamed(source, [''], 'host') : undefined;
    const port = host?.attrs.get('port');
    return { ...base, file: null, nbd: { export: source?.attrs.get('name') ?? '', host: host?.attrs.get('name') ?? null, port: port === undefined ? null : Number(port), socket: host?.attrs.get('socket') ?? null } };
  }
  if (type !== 'file') throw new UnsupportedPackageError(file, `disk ${name}: a <disk type='${type}'> (only file disks are imported)`);
  const src = source?.attrs.get('file');
  if (!src) throw new PackageError(file, `disk ${name} has no <source file>`);
  const resolved = path.resolve(dir, src);
  if (!opts.allowOutside && !inside(dir, resolved)) {
    throw new PackageError(file, `disk ${name}: its source ${src} is outside the descriptor's directory ${dir} (put the disk beside the descriptor and name it relatively, or allow paths outside)`);
  }
  return { ...base, file: resolved, nbd: null };
}

function networkOf(el: XmlElement): NetworkSettings {
  const type = el.attrs.get('type') ?? 'network';
  const source = childNamed(el, [''], 'source');
  const name = source?.attrs.get('network') ?? source?.attrs.get('bridge') ?? source?.attrs.get('dev') ?? type;
  const model = childNamed(el, [''], 'model')?.attrs.get('type')?.toLowerCase() ?? null;
  return { name, model: model !== null && /^[a-z0-9][a-z0-9._-]*$/.test(model) ? model : null };
}

function firmwareOf(os: XmlElement | undefined): Firmware {
  if (!os) return 'bios';
  const fw = os.attrs.get('firmware');
  if (fw !== undefined) return fw === 'efi' ? 'efi' : 'bios';
  const loader = childNamed(os, [''], 'loader');
  return loader && (loader.attrs.get('type') === 'pflash' || /ovmf|edk2|efi/i.test(loader.text)) ? 'efi' : 'bios';
}

/**
 * Parses a libvirt domain XML (as `virsh dumpxml` writes it) at `file`:
 * settings, and its disks with file sources resolved against the
 * descriptor's directory. CD-ROMs and floppies are left out (noted); a disk
 * that is neither a file nor an NBD export is refused.
 */
export function parseDomain(text: string, file: string, opts: ParseDomainOptions = {}): LibvirtDescriptor {
  const root = parseXml(text, file);
  if (root.local !== 'domain' || root.ns !== '') throw new PackageError(file, `is not a libvirt domain (its root is <${root.local}>)`);
  const dir = path.dirname(path.resolve(file));
  const notes: string[] = [];
  const name = childNamed(root, [''], 'name')?.text.trim();
  if (!name) throw new PackageError(file, 'the domain has no <name>');
  const memoryBytes = memory(childNamed(root, [''], 'memory'), file, 'memory');
  const current = memory(childNamed(root, [''], 'currentMemory'), file, 'currentMemory');
  if (memoryBytes === null) throw new PackageError(file, 'the domain has no <memory>');
  if (current !== null && current !== memoryBytes) notes.push(`currentMemory (${current} bytes) is below memory; the template keeps memory (${memoryBytes} bytes)`);
  const vcpu = childNamed(root, [''], 'vcpu');
  const cpus = vcpu ? Number(vcpu.text.trim()) : 1;
  if (!Number.isSafeInteger(cpus) || cpus < 1) throw new PackageError(file, `<vcpu> is '${vcpu?.text ?? ''}', not a CPU count`);
  const os = childNamed(root, [''], 'os');
  const devices = childNamed(root, [''], 'devices');
  const disks: LibvirtDisk[] = [];
  for (const el of devices ? childrenNamed(devices, [''], 'disk') : []) {
    const device = el.attrs.get('device') ?? 'disk';
    if (device === 'cdrom' || device === 'floppy') {
      const dev = childNamed(el, [''], 'target')?.attrs.get('dev');
      notes.push(dev === undefined ? `a ${device} is left out` : `the ${device} ${dev} is left out`);
      continue;
    }
    if (device !== 'disk') throw new UnsupportedPackageError(file, `a <disk device='${device}'>`);
    const disk = diskOf(el, dir, file, opts);
    if (disks.some((d) => d.name === disk.name)) throw new PackageError(file, `two disks are ${disk.name}`);
    if (childNamed(el, [''], 'backingStore')?.children.length) notes.push(`disk ${disk.name} has a backing chain; its image names it`);
    disks.push(disk);
  }
  if (disks.length > 0 && disks.every((d) => d.bootOrder === null)) {
    // The domain-wide <boot dev='hd'/> (or none): the first disk boots.
    disks[0]!.bootOrder = 1;
  }
  const ordered = normaliseBootOrder(disks.map((d) => ({ name: d.name, capacity: 1, bus: d.bus, bootOrder: d.bootOrder })));
  ordered.forEach((d, i) => (disks[i]!.bootOrder = d.bootOrder));
  const networks = devices ? childrenNamed(devices, [''], 'interface').map(networkOf) : [];
  const osinfo = childNamed(root, [''], 'metadata')
    ?.children.find((c) => c.ns === LIBOSINFO_NS && c.local === 'libosinfo')
    ?.children.find((c) => c.ns === LIBOSINFO_NS && c.local === 'os')
    ?.attrs.get('id');
  const description = childNamed(root, [''], 'description')?.text.trim() || childNamed(root, [''], 'title')?.text.trim();
  const settings = {
    name,
    description: description || null,
    os: { ovfId: null, osType: null, osinfo: osinfo ?? null, description: null },
    cpus,
    memoryBytes,
    firmware: firmwareOf(os),
    networks,
    source: 'libvirt' as const,
  };
  // Checked now, with stand-in capacities, so a bad name or count fails here.
  validateSettings({ ...settings, disks: ordered });
  return { settings, disks, notes };
}

/** The template's settings once each disk's capacity is known (from its image). */
export function domainSettings(d: LibvirtDescriptor, capacity: (disk: LibvirtDisk) => number): TemplateSettings {
  return validateSettings({ ...d.settings, disks: d.disks.map((disk) => ({ name: disk.name, capacity: capacity(disk), bus: disk.bus, bootOrder: disk.bootOrder })) });
}

export interface DomainExport {
  /** The settings disk. */
  disk: string;
  /** The NBD export serving its clone. */
  exportName: string;
}

/** Guest device names in the order libvirt gives them: vda, vdb… per prefix. */
function deviceName(prefix: string, i: number): string {
  let s = '';
  for (let n = i; ; n = Math.floor(n / 26) - 1) {
    s = String.fromCharCode(97 + (n % 26)) + s;
    if (n < 26) break;
  }
  return prefix + s;
}

const PREFIX: Record<DiskBus, string> = { virtio: 'vd', scsi: 'sd', sata: 'sd', ide: 'hd' };

/**
 * A domain XML for `settings` whose disks are Strata's NBD exports at
 * `address` (`virsh define` of it makes a guest that boots the template's
 * clone). Device names follow the disks' order per bus, from vda/sda/hda;
 * the firmware is libvirt's automatic selection (`<os firmware='efi'>`).
 */
export function writeDomain(input: TemplateSettings, exports: readonly DomainExport[], address: ListenAddress, opts: { tls?: boolean } = {}): string {
  const settings = validateSettings(input);
  const counts = new Map<string, number>();
  const disks = settings.disks.map((d) => {
    const e = exports.find((x) => x.disk === d.name);
    if (!e) throw new Error(`disk ${d.name} has no export to point at`);
    const prefix = PREFIX[d.bus];
    const n = counts.get(prefix) ?? 0;
    counts.set(prefix, n + 1);
    const xml = libvirtDiskXml({ exportName: e.exportName, address, target: deviceName(prefix, n), bus: d.bus, tls: opts.tls === true, ...(d.bootOrder === null ? {} : { bootOrder: d.bootOrder }) });
    return xml
      .trimEnd()
      .split('\n')
      .map((l) => `    ${l}`)
      .join('\n');
  });
  const mem = bytesInUnits(settings.memoryBytes, 20);
  const unit = { 'byte * 2^20': 'MiB', 'byte * 2^10': 'KiB', byte: 'b' }[mem.units] ?? 'b';
  const lines = [`<domain type='kvm'>`, `  <name>${x(settings.name)}</name>`];
  if (settings.description !== null) lines.push(`  <description>${x(settings.description)}</description>`);
  if (settings.os.osinfo !== null) lines.push('  <metadata>', `    <libosinfo:libosinfo xmlns:libosinfo='${LIBOSINFO_NS}'>`, `      <libosinfo:os id='${x(settings.os.osinfo)}'/>`, '    </libosinfo:libosinfo>', '  </metadata>');
  lines.push(`  <memory unit='${unit}'>${mem.quantity}</memory>`, `  <currentMemory unit='${unit}'>${mem.quantity}</currentMemory>`, `  <vcpu placement='static'>${settings.cpus}</vcpu>`);
  lines.push(settings.firmware === 'efi' ? "  <os firmware='efi'>" : '  <os>', "    <type arch='x86_64' machine='q35'>hvm</type>", '  </os>');
  lines.push('  <features>', '    <acpi/>', '    <apic/>', '  </features>', "  <cpu mode='host-passthrough'/>", "  <clock offset='utc'/>", '  <devices>');
  lines.push(...disks);
  if (settings.disks.some((d) => d.bus === 'scsi')) lines.push("    <controller type='scsi' model='virtio-scsi'/>");
  for (const n of settings.networks) {
    lines.push("    <interface type='network'>", `      <source network='${x(n.name)}'/>`, ...(n.model === null ? [] : [`      <model type='${x(n.model)}'/>`]), '    </interface>');
  }
  lines.push("    <serial type='pty'/>", "    <console type='pty'/>", '  </devices>', '</domain>', '');
  return lines.join('\n');
}
