import { parseOvf, type OvfDescriptor } from '../package/ovf-descriptor.js';
import { PackageError, UnsupportedPackageError } from '../package/errors.js';
import { settingsToJson, validateSettings } from '../package/settings.js';
import { MAX_DESCRIPTOR_BYTES } from '../package/xml-tree.js';
import type { ByteSource } from '../image/byte-source.js';
import type { TemplateSettings as CatalogSettings } from '../qcowlike/index.js';
import type { HttpOptions } from './http-source.js';
import { locatePackage, type PackageLocation } from './package-location.js';
import type { OpenedPackage } from './template-import.js';

/**
 * A template package opened for import, whatever it is and wherever it is:
 * its descriptor parsed by the package library (src/package), its disks
 * handed over one by one as the library reads them.
 */
export async function openTemplateSource(source: string, opts: HttpOptions): Promise<OpenedPackage> {
  const loc = await locatePackage(source, opts);
  switch (loc.kind) {
    case 'ovf':
      return openOvf(loc);
    case 'ova':
    case 'xml':
      throw new UnsupportedPackageError(loc.main, `importing ${loc.kind === 'ova' ? 'an OVA' : 'a libvirt domain XML'}`);
  }
}

/** The whole of a small file (a descriptor), front to back. */
async function readText(src: ByteSource, max = MAX_DESCRIPTOR_BYTES): Promise<string> {
  const parts: Buffer[] = [];
  let at = 0;
  try {
    for (;;) {
      const b = await src.read(at, 1 << 20);
      if (b.length === 0) break;
      at += b.length;
      if (at > max) throw new PackageError(src.name, `is larger than ${max} bytes, too large for a descriptor`);
      parts.push(b);
    }
  } finally {
    await src.close();
  }
  return Buffer.concat(parts).toString('utf8');
}

/** The settings a descriptor gave, with its disks named as the templates that hold them, as the catalog keeps them. */
function namedSettings(d: OvfDescriptor, names: readonly string[]): CatalogSettings {
  const settings = validateSettings({ ...d.settings, disks: d.settings.disks.map((disk, i) => ({ ...disk, name: names[i] ?? disk.name })) });
  return JSON.parse(settingsToJson(settings)) as CatalogSettings;
}

/** The order an OVA holds its disks in: References order; disks without a file (blank) last. */
function fileOrder(d: OvfDescriptor): number[] {
  const rank = (i: number): number => {
    const f = d.disks[i]!.file;
    return f === null ? d.files.length : d.files.indexOf(f);
  };
  return d.disks.map((_, i) => i).sort((a, b) => rank(a) - rank(b));
}

/** An .ovf with its disk files beside it (a directory, a share, an http folder). */
async function openOvf(loc: PackageLocation): Promise<OpenedPackage> {
  const d = parseOvf(await readText(await loc.openMain()), loc.main, 'ovf');
  // A missing disk is refused before any volume is made, wherever that can be known up front.
  if (!loc.remote) {
    for (const disk of d.disks) {
      if (disk.file === null) continue;
      const src = await loc.openRelative(disk.file.href);
      if (src === null) throw new PackageError(loc.main, `the disk file '${disk.file.href}' (disk ${disk.diskId}) is missing from the package`);
      await src.close();
    }
  }
  return {
    name: loc.main,
    vmName: d.settings.name,
    capacities: d.disks.map((x) => x.capacity),
    settingsFor: (names) => namedSettings(d, names),
    eachDisk: async (onDisk) => {
      for (const index of fileOrder(d)) {
        const disk = d.disks[index]!;
        const file = disk.file;
        if (file === null) {
          await onDisk({ index, file: null, format: 'raw', source: null });
          continue;
        }
        if (file.compression !== null || file.chunkSize !== null) throw new UnsupportedPackageError(loc.main, `File ${file.id}: ${file.compression !== null ? `${file.compression} compression` : 'a chunked file'}`);
        const source = await loc.openRelative(file.href);
        if (source === null) throw new PackageError(loc.main, `the disk file '${file.href}' (disk ${disk.diskId}) is missing from the package`);
        if (file.size !== null && source.size !== null && file.size !== source.size) {
          await source.close();
          throw new PackageError(loc.main, `the disk file '${file.href}' is ${source.size} bytes, the descriptor says ${file.size}`);
        }
        try {
          await onDisk({ index, file: file.href, format: disk.format ?? 'raw', source });
        } finally {
          await source.close();
        }
      }
    },
    close: async () => undefined,
  };
}
