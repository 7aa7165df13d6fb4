import type { BlockDevice } from '../blockdev/index.js';
import type { ByteSource } from '../image/byte-source.js';
import { deviceSink, type DeviceSink } from '../image/device-sink.js';
import { openImage } from '../image/formats.js';
import type { DiskFormat } from '../image/image-reader.js';
import type { TemplateSettings } from '../qcowlike/index.js';
import type { TemplateInfo } from '../snapshot/index.js';
import { formatSize } from './size.js';
import { isValidName, NAME_RULE } from '../qcowlike/names.js';

/** One disk of a package, as the package library hands it over: its image bytes and what the descriptor says of them. */
export interface PackageDisk {
  /** The disk's place in the descriptor's list (the settings' order): 0 is the template NAME, 1 NAME-disk2, … */
  index: number;
  /** The disk's file as the descriptor names it (its href, its source file); null for a disk the descriptor declares without one. */
  file: string | null;
  /** Null: the image's magic says (a local file only). */
  format: DiskFormat | null;
  /** The image's bytes; null: a blank disk of its capacity. */
  source: ByteSource | null;
}

/** A package opened for import: its descriptor read, its disks still to come. */
export interface OpenedPackage {
  /** The package as messages name it: a path or URL. */
  readonly name: string;
  /** The VM's name in the descriptor, for a template name when none is given. */
  readonly vmName: string;
  /** The disks' declared capacities, in the descriptor's order, known before any disk is read; null: the image's virtual size (a libvirt domain declares none). */
  readonly capacities: readonly (number | null)[];
  /** The settings the first template keeps, with the disks named as the templates that hold them, of the sizes they were made. */
  settingsFor(templates: readonly string[], sizes: readonly number[]): TemplateSettings;
  /**
   * Hands the disks to `onDisk` in the order the package holds them (an
   * OVA's tar order, which may differ from the descriptor's), each once,
   * one at a time: the package is read on only when `onDisk` returns (an
   * OVA is one stream). Damage found on the way (a manifest digest that
   * does not match, a truncated tar) rejects, even after the last disk.
   */
  eachDisk(onDisk: (disk: PackageDisk) => Promise<void>): Promise<void>;
  close(): Promise<void>;
}

/** Where an import makes its volumes and templates: a pool this process opened, or a served pool over its control socket. */
export interface TemplateTarget {
  /** Whether a volume or template of that name exists; `incomplete`: a volume an import cut short left (marked so), to be made anew. */
  exists(name: string): Promise<'no' | 'yes' | 'incomplete'>;
  /** A new empty volume (marked incomplete where the pool keeps such a mark), open for writing; it reads zeroes. */
  create(name: string, size: number): Promise<BlockDevice>;
  /** Makes the volume's data durable and closes it; the volume is complete. */
  complete(name: string, device: BlockDevice): Promise<void>;
  makeTemplate(name: string, settings: TemplateSettings | undefined): Promise<TemplateInfo>;
  /** Removes what a failed import made; never throws (whatever stays is marked incomplete, or reported). */
  removeVolume(name: string): Promise<void>;
  removeTemplate(name: string): Promise<void>;
}

/** Where the import says how far it got: virtual bytes of all disks dealt with so far (a progress bar, a job). */
export interface ImportProgress {
  update(done: number): void;
}

export interface ImportedDisk {
  template: string;
  file: string | null;
  format: DiskFormat;
  subformat: string | null;
  size: number;
  dataBytes: number;
  zeroBytes: number;
}

export interface TemplateImportResult {
  templates: TemplateInfo[];
  disks: ImportedDisk[];
}

/** A failure of an import, said once, after what it made was removed. */
export class TemplateImportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TemplateImportError';
  }
}

/** The names of the templates a package of `count` disks becomes: NAME, NAME-disk2, NAME-disk3, … */
export function templateNames(name: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => (i === 0 ? name : `${name}-disk${i + 1}`));
}

/** A template name from a VM name that may hold anything: runs of other characters become '-', cut to fit the name rule. */
export function nameFromVm(vmName: string): string {
  const cleaned = vmName
    .normalize('NFKD')
    // Accents go with their letters rather than becoming separators.
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 56)
    .replace(/[-.]+$/, '');
  return isValidName(cleaned) ? cleaned : 'template';
}

/**
 * Imports a package: each disk decoded by its format's reader into a new
 * volume (marked incomplete while written), then every volume made a
 * template, the first with the package's settings. Any failure (a damaged
 * package, a disk bigger than declared, an interrupt) removes everything
 * made so far, so nothing half-imported stays.
 */
export async function importTemplate(pkg: OpenedPackage, target: TemplateTarget, name: string, progress: ImportProgress, signal?: AbortSignal): Promise<TemplateImportResult> {
  const names = templateNames(name, pkg.capacities.length);
  for (const n of names) {
    if (!isValidName(n)) throw new TemplateImportError(`'${n}' is not a valid template name (${NAME_RULE})`);
    const there = await target.exists(n);
    if (there === 'yes') throw new TemplateImportError(`'${n}' already exists (a volume or template of that name); name the import POOL/OTHER`);
  }
  // What a killed import left (marked incomplete) is thrown away, so a retry starts clean.
  for (const n of names) if ((await target.exists(n)) === 'incomplete') await target.removeVolume(n);
  const volumes: string[] = [];
  const templates: TemplateInfo[] = [];
  const disks: ImportedDisk[] = [];
  let open: { device: BlockDevice; sink: DeviceSink } | undefined;
  try {
    const seen = new Set<number>();
    const sizes: number[] = [];
    let before = 0;
    await pkg.eachDisk(async (disk) => {
      if (signal?.aborted) throw new Error('interrupted');
      const vol = names[disk.index];
      const declared = pkg.capacities[disk.index];
      if (vol === undefined || declared === undefined || seen.has(disk.index)) throw new TemplateImportError(`${pkg.name}: holds more disks than its descriptor lists (${names.length})`);
      seen.add(disk.index);
      const reader = disk.source === null ? null : await openImage(disk.source, disk.format ?? undefined);
      const capacity = declared ?? reader?.virtualSize;
      if (capacity === undefined) throw new TemplateImportError(`${pkg.name}: disk ${disk.index + 1} has neither a file nor a capacity`);
      if (reader && disk.source) {
        if (reader.backing !== null) throw new TemplateImportError(`${disk.source.name}: has a backing file (${reader.backing.file}); a package disk must stand alone`);
        if (reader.virtualSize > capacity) throw new TemplateImportError(`${disk.source.name}: is ${formatSize(reader.virtualSize)} (${reader.virtualSize} bytes), larger than the ${formatSize(capacity)} (${capacity} bytes) its descriptor declares`);
      }
      const device = await target.create(vol, capacity);
      volumes.push(vol);
      const start = before;
      const sink = deviceSink(device, { readsZeroes: true, progress: (n) => progress.update(start + n) });
      open = { device, sink };
      await reader?.decode(sink, signal);
      await sink.drain();
      open = undefined;
      await target.complete(vol, device);
      before += capacity;
      progress.update(before);
      sizes[disk.index] = capacity;
      disks.push({ template: vol, file: disk.file, format: reader?.format ?? disk.format ?? 'raw', subformat: reader?.subformat ?? null, size: capacity, dataBytes: sink.stats.dataBytes, zeroBytes: sink.stats.zeroBytes });
    });
    if (seen.size < names.length) throw new TemplateImportError(`${pkg.name}: has ${seen.size} of the ${names.length} disks its descriptor lists`);
    disks.sort((a, b) => names.indexOf(a.template) - names.indexOf(b.template));
    const settings = pkg.settingsFor(names, sizes);
    for (const [k, vol] of names.entries()) {
      templates.push(await target.makeTemplate(vol, k === 0 ? settings : undefined));
      volumes.splice(volumes.indexOf(vol), 1);
    }
    return { templates, disks };
  } catch (err) {
    if (open) {
      // Writes still in flight land (or fail) before the volume goes.
      await open.sink.drain().catch(() => undefined);
      await open.device.close().catch(() => undefined);
    }
    for (const t of templates.reverse()) await target.removeTemplate(t.name);
    for (const v of volumes.reverse()) await target.removeVolume(v);
    throw err;
  }
}
