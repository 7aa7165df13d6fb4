import path from 'node:path';
import { fileSource, type ByteSource } from '../image/byte-source.js';
import { PackageError, UnsupportedPackageError } from '../package/errors.js';
import { chunkName } from '../package/href.js';
import { domainSettings, parseDomain } from '../package/libvirt-domain.js';
import { Digests, MAX_MANIFEST_BYTES, mismatch, parseManifest, type ManifestEntry } from '../package/manifest.js';
import { readOva, type PackageResult, type ReadPackageOptions } from '../package/ova-reader.js';
import { parseOvf, type OvfDescriptor } from '../package/ovf-descriptor.js';
import { readOvfDir } from '../package/ovf-dir.js';
import { diskChain, feed, packageDisk, startDecode, type PackageDisk as LibraryDisk } from '../package/package-disk.js';
import { settingsToJson, type TemplateSettings } from '../package/settings.js';
import { MAX_DESCRIPTOR_BYTES } from '../package/xml-tree.js';
import type { TemplateSettings as CatalogSettings } from '../qcowlike/index.js';
import { DownloadError, type HttpOptions } from './http-source.js';
import { locatePackage, type PackageLocation } from './package-location.js';
import type { OpenedPackage, PackageDisk } from './template-import.js';

/**
 * A template package opened for import, whatever it is and wherever it is:
 * its descriptor parsed and its disks handed over by the package library
 * (src/package): an OVA read once front to back, an OVF directory with its
 * manifest checked, a libvirt domain XML with its file disks; each from a
 * path or an http(s) URL.
 */
export async function openTemplateSource(source: string, opts: HttpOptions & { signal?: AbortSignal; allowOutside?: boolean }): Promise<OpenedPackage> {
  const loc = await locatePackage(source, opts);
  switch (loc.kind) {
    case 'ova':
      return callbackPackage(loc.main, async (o) => readOva(await loc.streamMain(), o), opts.signal);
    case 'ovf':
      return callbackPackage(loc.main, (o) => (loc.remote ? readRemoteOvf(loc, o) : readOvfDir(loc.main, o)), opts.signal);
    case 'xml':
      return openDomain(loc, opts.allowOutside === true);
  }
}

/** The catalog's form of settings (a plain JSON object). */
function catalogSettings(s: TemplateSettings): CatalogSettings {
  return JSON.parse(settingsToJson(s)) as CatalogSettings;
}

/** The settings a descriptor gave, with its disks named as the templates that hold them. */
function namedSettings(d: OvfDescriptor, names: readonly string[]): CatalogSettings {
  return catalogSettings({ ...d.settings, disks: d.settings.disks.map((disk, i) => ({ ...disk, name: names[i] ?? disk.name })) });
}

/**
 * A package the library reads with callbacks (onDescriptor, then onDisk per
 * disk), as an OpenedPackage: the read starts here and waits after the
 * descriptor until the import asks for the disks, so that names are checked
 * before anything is made; then each disk is handed over as the library
 * brings it. Disks the descriptor declares without a file are blank, handed
 * over after the rest.
 */
async function callbackPackage(name: string, read: (opts: ReadPackageOptions) => Promise<PackageResult>, signal: AbortSignal | undefined): Promise<OpenedPackage> {
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
  const reading = read({
    name,
    ...(signal ? { signal } : {}),
    onDescriptor: async (d) => {
      parsed = d;
      gotDescriptor(d);
      await started;
    },
    onDisk: async (disk: LibraryDisk, source: ByteSource) => {
      const onDisk = await started;
      await onDisk({ index: parsed!.disks.findIndex((x) => x.diskId === disk.diskId), file: disk.file.href, format: disk.format, source });
    },
  });
  reading.catch(() => undefined);
  const d = await Promise.race([descriptor, reading.then(() => Promise.reject(new PackageError(name, 'holds no descriptor')))]);
  let begun = false;
  return {
    name,
    vmName: d.settings.name,
    capacities: d.disks.map((x) => x.capacity),
    settingsFor: (names) => namedSettings(d, names),
    eachDisk: async (onDisk) => {
      begun = true;
      start(onDisk);
      await reading;
      for (const [index, disk] of d.disks.entries()) if (disk.file === null) await onDisk({ index, file: null, format: 'raw', source: null });
    },
    close: async () => {
      if (!begun) cancel(new Error(`${name}: not imported`));
      await reading.catch(() => undefined);
    },
  };
}

/** The whole of a small file (a descriptor, a manifest), front to back. */
async function readAll(src: ByteSource, max: number): Promise<Buffer> {
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

/**
 * An .ovf over HTTP, its files fetched beside it (never outside its folder),
 * as the library reads a local OVF directory: the manifest (`app.mf` for
 * `app.ovf`) checked, each file streamed once through the library's
 * decoding chain (gunzip, chunks joined, capacity guard) and hashed on the
 * way, whole even when the disk's reader stopped early.
 */
async function readRemoteOvf(loc: PackageLocation, opts: ReadPackageOptions): Promise<PackageResult> {
  const text = await readAll(await loc.openMain(), MAX_DESCRIPTOR_BYTES);
  const ovfHref = decodeURIComponent(new URL(loc.main).pathname.split('/').pop() ?? '');
  const d = parseOvf(text.toString('utf8'), loc.main, 'ovf');
  const mfHref = ovfHref.replace(/\.ovf$/i, '') + '.mf';
  const mfName = loc.where(mfHref);
  let manifest: Map<string, ManifestEntry> | null = null;
  try {
    const src = await loc.openRelative(mfHref);
    if (src) manifest = parseManifest((await readAll(src, MAX_MANIFEST_BYTES)).toString('utf8'), mfName);
  } catch (err) {
    if (!(err instanceof DownloadError && / HTTP 404\b/.test(err.message))) throw err;
  }
  const notes: string[] = manifest === null ? [`${loc.main} has no manifest (${mfHref}): its files were not verified`] : [];
  const verify = (file: string, digests: Digests): void => {
    const entry = manifest?.get(file);
    if (manifest !== null && entry === undefined) notes.push(`${file} is not in the manifest, so it was not verified`);
    const bad = entry ? mismatch(entry, digests, mfName) : null;
    if (bad) throw bad;
  };
  const algorithms = (file: string): ManifestEntry['algorithm'][] => {
    const e = manifest?.get(file);
    return e ? [e.algorithm] : [];
  };
  const ovfDigests = new Digests(algorithms(ovfHref));
  ovfDigests.update(text);
  verify(ovfHref, ovfDigests);
  await opts.onDescriptor?.(d);
  for (const od of d.disks) {
    if (od.file === null) continue;
    if (opts.signal?.aborted) throw new Error(`reading ${opts.name} was interrupted`);
    const disk = packageDisk(od, loc.main);
    const f = disk.file;
    if (f.chunkSize !== null && f.size === null) throw new PackageError(loc.main, `File ${f.id} is chunked but gives no ovf:size (the chunks' total)`);
    // A raw disk read from a stream needs its size: the file's, or its capacity when the descriptor gives none.
    const chain = diskChain(disk, loc.where(f.href), f.size ?? (disk.format === 'raw' ? disk.capacity : null));
    const decode = startDecode(chain, (source) => opts.onDisk(disk, source));
    try {
      let stored = 0;
      for (let i = 0; f.chunkSize === null ? i < 1 : stored < f.size!; i++) {
        const part = f.chunkSize === null ? f.href : chunkName(f.href, i);
        const src = await loc.openRelative(part);
        if (src === null) throw new PackageError(loc.main, `disk ${od.diskId}: its file ${part} is missing from the package`);
        const digests = new Digests(algorithms(part));
        try {
          for (let at = 0; ; ) {
            const b = await src.read(at, 1 << 20);
            if (b.length === 0) break;
            at += b.length;
            stored += b.length;
            digests.update(b);
            await feed(chain.input, b);
            if (decode.failure) throw decode.failure.err;
          }
        } finally {
          await src.close();
        }
        verify(part, digests);
      }
      if (f.size !== null && stored !== f.size) throw new PackageError(loc.where(f.href), `is ${stored} bytes, but the descriptor says ${f.size}`);
      chain.input.end();
    } catch (err) {
      chain.fail(err as Error);
      await decode.done;
      throw err;
    }
    await decode.done;
    if (decode.failure) throw decode.failure.err;
  }
  return { descriptor: d, manifest: manifest === null ? null : mfName, certificate: null, notes };
}

/** Where a remote domain is parsed as if it sat, so that a disk's href is its path relative to the descriptor. */
const REMOTE_FOLDER = '/package';

/**
 * A libvirt domain XML with its file disks beside it (sources relative to
 * the descriptor; paths outside its folder are refused by the library unless
 * `allowOutside`, for a local file only). Each disk's capacity is its
 * image's virtual size, read when the import gets to it; a disk that is an
 * NBD export (as Strata's own XML export writes) is refused.
 */
async function openDomain(loc: PackageLocation, allowOutside: boolean): Promise<OpenedPackage> {
  const text = (await readAll(await loc.openMain(), MAX_DESCRIPTOR_BYTES)).toString('utf8');
  const at = loc.remote ? path.join(REMOTE_FOLDER, 'domain.xml') : loc.main;
  let d: ReturnType<typeof parseDomain>;
  try {
    d = parseDomain(text, at, { allowOutside: allowOutside && !loc.remote });
  } catch (err) {
    // The library names the file it was given: a remote domain's is its URL.
    if (err instanceof Error && loc.remote) err.message = err.message.split(at).join(loc.main).split(REMOTE_FOLDER).join(loc.main.replace(/\/[^/]*$/, ''));
    throw err;
  }
  const folder = path.dirname(path.resolve(at));
  const hrefs = d.disks.map((disk) => {
    if (disk.file === null) throw new UnsupportedPackageError(loc.main, `disk ${disk.name} is an NBD export (${disk.nbd?.export ?? '?'}), not a file; importing it`);
    return path.relative(folder, disk.file);
  });
  return {
    name: loc.main,
    vmName: d.settings.name,
    capacities: d.disks.map(() => null),
    settingsFor: (names, sizes) => {
      const named = d.disks.map((disk, i) => ({ ...disk, name: names[i] ?? disk.name }));
      return catalogSettings(domainSettings({ ...d, disks: named }, (disk) => sizes[named.indexOf(disk)] ?? 1));
    },
    eachDisk: async (onDisk) => {
      for (const [index, disk] of d.disks.entries()) {
        const href = hrefs[index]!;
        // A path outside the folder was allowed by the user (a local file only).
        const source = href.startsWith('..') || path.isAbsolute(href) ? fileSource(path.resolve(folder, href)) : await loc.openRelative(href);
        if (source === null) throw new PackageError(loc.main, `disk ${disk.name}: its file ${hrefs[index]} is missing`);
        try {
          await onDisk({ index, file: hrefs[index]!, format: disk.format, source });
        } finally {
          await source.close();
        }
      }
    },
    close: async () => undefined,
  };
}
