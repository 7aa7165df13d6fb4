import { parseOvf, type OvfDescriptor } from '../package/ovf-descriptor.js';
import { readOva } from '../package/ova-reader.js';
import { PackageError, UnsupportedPackageError } from '../package/errors.js';
import { settingsToJson, validateSettings } from '../package/settings.js';
import { MAX_DESCRIPTOR_BYTES } from '../package/xml-tree.js';
import type { ByteSource } from '../image/byte-source.js';
import type { TemplateSettings as CatalogSettings } from '../qcowlike/index.js';
import type { HttpOptions } from './http-source.js';
import { locatePackage, type PackageLocation } from './package-location.js';
import type { OpenedPackage, PackageDisk } from './template-import.js';

/**
 * A template package opened for import, whatever it is and wherever it is:
 * its descriptor parsed by the package library (src/package), its disks
 * handed over one by one as the library reads them.
 */
export async function openTemplateSource(source: string, opts: HttpOptions & { signal?: AbortSignal }): Promise<OpenedPackage> {
  const loc = await locatePackage(source, opts);
  switch (loc.kind) {
    case 'ovf':
      return openOvf(loc);
    case 'ova':
      return openOva(loc, opts.signal);
    case 'xml':
      throw new UnsupportedPackageError(loc.main, 'importing a libvirt domain XML');
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

/**
 * An OVA, read once front to back: the reader runs from here on, and holds
 * the stream after the descriptor until the import asks for the disks (so
 * that names are checked before anything is made), then hands each disk
 * over as the tar brings it, checked against the manifest as it streams.
 */
async function openOva(loc: PackageLocation, signal: AbortSignal | undefined): Promise<OpenedPackage> {
  const input = await loc.streamMain();
  let parsed: OvfDescriptor | undefined;
  let gotDescriptor!: (d: OvfDescriptor) => void;
  const descriptor = new Promise<OvfDescriptor>((resolve) => (gotDescriptor = resolve));
  let start!: (onDisk: (disk: PackageDisk) => Promise<void>) => void;
  let cancel!: (err: Error) => void;
  const started = new Promise<(disk: PackageDisk) => Promise<void>>((resolve, reject) => {
    start = resolve;
    cancel = reject;
  });
  started.catch(() => undefined);
  const reading = readOva(input, {
    name: loc.main,
    ...(signal ? { signal } : {}),
    onDescriptor: async (d) => {
      parsed = d;
      gotDescriptor(d);
      await started;
    },
    onDisk: async (disk, source) => {
      const onDisk = await started;
      const index = parsed!.disks.findIndex((x) => x.diskId === disk.diskId);
      await onDisk({ index, file: disk.file.href, format: disk.format, source });
    },
  });
  reading.catch(() => undefined);
  const d = await Promise.race([descriptor, reading.then(() => Promise.reject(new PackageError(loc.main, 'holds no descriptor')))]);
  let begun = false;
  return {
    name: loc.main,
    vmName: d.settings.name,
    capacities: d.disks.map((x) => x.capacity),
    settingsFor: (names) => namedSettings(d, names),
    eachDisk: async (onDisk) => {
      begun = true;
      start(onDisk);
      await reading;
      // Disks the descriptor declares without a file are blank: made after the rest.
      for (const [index, disk] of d.disks.entries()) if (disk.file === null) await onDisk({ index, file: null, format: 'raw', source: null });
    },
    close: async () => {
      if (!begun) cancel(new Error(`${loc.main}: not imported`));
      input.destroy();
      await reading.catch(() => undefined);
    },
  };
}
