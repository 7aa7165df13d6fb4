import path from 'node:path';
import { parseOvf, type OvfDescriptor, type OvfFile } from '../package/ovf-descriptor.js';
import { chunkName } from '../package/href.js';
import { Digests, MAX_MANIFEST_BYTES, mismatch, parseManifest, type DigestAlgorithm, type ManifestEntry } from '../package/manifest.js';
import { diskChain, feed, packageDisk } from '../package/package-disk.js';
import { readOva } from '../package/ova-reader.js';
import { PackageError, UnsupportedPackageError } from '../package/errors.js';
import { settingsToJson, validateSettings } from '../package/settings.js';
import { MAX_DESCRIPTOR_BYTES } from '../package/xml-tree.js';
import type { ByteSource } from '../image/byte-source.js';
import type { TemplateSettings as CatalogSettings } from '../qcowlike/index.js';
import { DownloadError, type HttpOptions } from './http-source.js';
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

/** The whole of a small file (a descriptor, a manifest), front to back; null when `src` is. */
async function readAll(src: ByteSource, max = MAX_DESCRIPTOR_BYTES): Promise<Buffer> {
  const parts: Buffer[] = [];
  let at = 0;
  try {
    for (;;) {
      const b = await src.read(at, 1 << 20);
      if (b.length === 0) break;
      at += b.length;
      if (at > max) throw new PackageError(src.name, `is larger than ${max} bytes, too large for what it is`);
      parts.push(b);
    }
  } finally {
    await src.close();
  }
  return Buffer.concat(parts);
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

/** The manifest beside an .ovf (`app.mf` for `app.ovf`), or null when there is none. */
async function ovfManifest(loc: PackageLocation, ovfHref: string): Promise<{ name: string; entries: Map<string, ManifestEntry> } | null> {
  const href = ovfHref.replace(/\.ovf$/i, '') + '.mf';
  let src: ByteSource | null;
  try {
    src = await loc.openRelative(href);
  } catch (err) {
    if (err instanceof DownloadError && / HTTP 404\b/.test(err.message)) return null;
    throw err;
  }
  if (src === null) return null;
  const name = loc.where(href);
  return { name, entries: parseManifest((await readAll(src, MAX_MANIFEST_BYTES)).toString('utf8'), name) };
}

/** Throws the mismatch when the manifest lists `file` and its digest differs. */
function check(manifest: { name: string; entries: Map<string, ManifestEntry> } | null, file: string, digests: Digests): void {
  const entry = manifest?.entries.get(file);
  if (!manifest || !entry) return;
  const bad = mismatch(entry, digests, manifest.name);
  if (bad) throw bad;
}

function algorithmsFor(manifest: { entries: Map<string, ManifestEntry> } | null, file: string): DigestAlgorithm[] {
  const e = manifest?.entries.get(file);
  return e ? [e.algorithm] : [];
}

/** The stored files of a References/File: itself, or its chunks `href.000000000`, … in order. */
function storedParts(file: OvfFile): (i: number) => string {
  return (i) => (file.chunkSize === null ? file.href : chunkName(file.href, i));
}

/**
 * An .ovf with its disk files beside it (a directory, a share, an http
 * folder). The manifest beside it, when there is one, is checked: local
 * plain files up front (so a mismatch is refused before anything is made,
 * and the readers may seek), downloads, gzipped and chunked files as they
 * stream through the package library's decoding chain.
 */
async function openOvf(loc: PackageLocation): Promise<OpenedPackage> {
  const text = await readAll(await loc.openMain());
  const ovfHref = loc.remote ? decodeURIComponent(new URL(loc.main).pathname.split('/').pop() ?? '') : path.basename(loc.main);
  const d = parseOvf(text.toString('utf8'), loc.main, 'ovf');
  const manifest = await ovfManifest(loc, ovfHref);
  const ovfDigests = new Digests(algorithmsFor(manifest, ovfHref));
  ovfDigests.update(text);
  check(manifest, ovfHref, ovfDigests);
  const streamed = (f: OvfFile): boolean => loc.remote || f.compression !== null || f.chunkSize !== null;
  // A missing or damaged local disk is refused before any volume is made.
  for (const disk of d.disks) {
    const f = disk.file;
    if (f === null || loc.remote) continue;
    const part = storedParts(f);
    const chunks = f.chunkSize === null ? 1 : Math.max(1, Math.ceil((f.size ?? f.chunkSize) / f.chunkSize));
    for (let i = 0; i < chunks; i++) {
      const src = await loc.openRelative(part(i));
      if (src === null) throw new PackageError(loc.main, `the disk file '${part(i)}' (disk ${disk.diskId}) is missing from the package`);
      try {
        if (f.chunkSize === null && f.size !== null && src.size !== f.size) throw new PackageError(loc.main, `the disk file '${f.href}' is ${src.size} bytes, the descriptor says ${f.size} (${(src.size ?? 0) > f.size ? 'larger than declared' : 'cut short'})`);
        if (!streamed(f) && manifest?.entries.has(f.href)) {
          const digests = new Digests(algorithmsFor(manifest, f.href));
          for (let at = 0; at < (src.size ?? 0); at += 4 << 20) digests.update(await src.read(at, 4 << 20));
          check(manifest, f.href, digests);
        }
      } finally {
        await src.close();
      }
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
        if (streamed(file)) {
          await streamDisk(loc, packageDisk(disk, loc.main), manifest, (source) => onDisk({ index, file: file.href, format: disk.format ?? 'raw', source }));
          continue;
        }
        const source = await loc.openRelative(file.href);
        if (source === null) throw new PackageError(loc.main, `the disk file '${file.href}' (disk ${disk.diskId}) is missing from the package`);
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
 * A disk file read as a stream: its stored parts (one file, or its chunks)
 * fed one after the other into the package library's decoding chain
 * (gunzip, capacity guard), each hashed on the way and checked against the
 * manifest, all of it even when the importer has read what it needs.
 */
async function streamDisk(loc: PackageLocation, disk: ReturnType<typeof packageDisk>, manifest: { name: string; entries: Map<string, ManifestEntry> } | null, onDisk: (source: ByteSource) => Promise<void>): Promise<void> {
  const f = disk.file;
  const part = storedParts(f);
  if (f.chunkSize !== null && f.size === null) throw new PackageError(loc.main, `File ${f.id} is chunked but gives no ovf:size (the chunks' total)`);
  // A raw disk read from a stream needs its size: the file's, or its capacity when the descriptor gives none.
  const chain = diskChain(disk, loc.where(f.href), f.size ?? (disk.format === 'raw' ? disk.capacity : null));
  let failure: { err: unknown } | undefined;
  const task = onDisk(chain.source).then(
    () => chain.stop(),
    (err: unknown) => {
      failure = { err };
      chain.stop();
    },
  );
  try {
    let stored = 0;
    for (let i = 0; f.chunkSize === null ? i < 1 : stored < f.size!; i++) {
      const src = await loc.openRelative(part(i));
      if (src === null) throw new PackageError(loc.main, `the disk file '${part(i)}' (disk ${disk.diskId}) is missing from the package`);
      const digests = new Digests(algorithmsFor(manifest, part(i)));
      try {
        for (let at = 0; ; ) {
          const b = await src.read(at, 1 << 20);
          if (b.length === 0) break;
          at += b.length;
          stored += b.length;
          digests.update(b);
          await feed(chain.input, b);
          if (failure) throw failure.err;
        }
      } finally {
        await src.close();
      }
      try {
        check(manifest, part(i), digests);
      } catch (err) {
        chain.fail(err as Error);
        throw err;
      }
    }
    if (f.size !== null && stored !== f.size) throw new PackageError(loc.main, `the disk file '${f.href}' holds ${stored} bytes, the descriptor says ${f.size}`);
    chain.input.end();
    await task;
    if (failure) throw (failure as { err: unknown }).err;
  } catch (err) {
    chain.stop();
    await task;
    throw err;
  }
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
