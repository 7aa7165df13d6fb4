import fs from 'node:fs';
import path from 'node:path';
import { fileSource } from '../image/byte-source.js';
import { PackageError } from './errors.js';
import { chunkName } from './href.js';
import { Digests, MAX_MANIFEST_BYTES, mismatch, parseManifest, type ManifestEntry } from './manifest.js';
import type { PackageResult, ReadPackageOptions } from './ova-reader.js';
import { parseOvf, type OvfFile } from './ovf-descriptor.js';
import { diskChain, feed, packageDisk, startDecode } from './package-disk.js';
import { MAX_DESCRIPTOR_BYTES } from './xml-tree.js';

/** The .ovf named, or the one .ovf in the directory named. */
export function findDescriptor(target: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(target);
  } catch {
    throw new PackageError(target, 'does not exist');
  }
  if (!st.isDirectory()) return target;
  const found = fs.readdirSync(target).filter((f) => f.toLowerCase().endsWith('.ovf'));
  if (found.length !== 1) throw new PackageError(target, found.length === 0 ? 'holds no .ovf descriptor' : `holds ${found.length} .ovf descriptors (${found.join(', ')}); name the one to import`);
  return path.join(target, found[0]!);
}

/**
 * The path of `href` in the package directory `dir`, refused when it leaves
 * it (the href was checked already; this catches symlinks pointing out) or
 * is not a regular file. Missing: null.
 */
function memberPath(dir: string, href: string): string | null {
  const p = path.join(dir, href);
  let real: string;
  try {
    real = fs.realpathSync(p);
  } catch {
    return null;
  }
  const rel = path.relative(fs.realpathSync(dir), real);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) throw new PackageError(p, `is a link to ${real}, outside the package directory ${dir}`);
  if (!fs.statSync(real).isFile()) throw new PackageError(p, 'is not a regular file');
  return real;
}

async function hashFile(file: string, entry: ManifestEntry): Promise<Digests> {
  const d = new Digests([entry.algorithm]);
  for await (const chunk of fs.createReadStream(file)) d.update(chunk as Buffer);
  return d;
}

/** The files of one References/File on disk: itself, or its chunks in order. */
function partsOf(dir: string, f: OvfFile): { href: string; path: string }[] | null {
  if (f.chunkSize === null) {
    const p = memberPath(dir, f.href);
    return p === null ? null : [{ href: f.href, path: p }];
  }
  const parts: { href: string; path: string }[] = [];
  for (let i = 0; ; i++) {
    const href = chunkName(f.href, i);
    const p = memberPath(dir, href);
    if (p === null) break;
    parts.push({ href, path: p });
  }
  return parts.length === 0 ? null : parts;
}

/**
 * Reads an OVF package on disk: a .ovf (or a directory holding one) with
 * its files beside it. The manifest (the descriptor's base name with .mf)
 * is checked by hashing each file before it is handed over; disks are
 * handed over in the descriptor's order, as files (read anywhere) unless
 * gzipped or chunked (then streamed, decoded).
 */
export async function readOvfDir(target: string, opts: ReadPackageOptions): Promise<PackageResult> {
  const ovfPath = findDescriptor(target);
  const dir = path.dirname(ovfPath);
  const ovfName = path.basename(ovfPath);
  const size = fs.statSync(ovfPath).size;
  if (size > MAX_DESCRIPTOR_BYTES) throw new PackageError(ovfPath, `is ${size} bytes, more than a descriptor may be`);
  const ovfBytes = fs.readFileSync(ovfPath);
  const descriptor = parseOvf(ovfBytes.toString('utf8'), ovfPath, 'ovf');
  const notes: string[] = [];
  const base = ovfPath.replace(/\.ovf$/i, '');
  let manifest: Map<string, ManifestEntry> | null = null;
  const mfPath = `${base}.mf`;
  if (fs.existsSync(mfPath)) {
    if (fs.statSync(mfPath).size > MAX_MANIFEST_BYTES) throw new PackageError(mfPath, 'is too large for a manifest');
    manifest = parseManifest(fs.readFileSync(mfPath, 'utf8'), mfPath);
    for (const [file, entry] of manifest) {
      if (file === ovfName) {
        const d = new Digests([entry.algorithm]);
        d.update(ovfBytes);
        const bad = mismatch(entry, d, mfPath);
        if (bad) throw bad;
      } else if (!descriptor.files.some((f) => f.href === file || (f.chunkSize !== null && file.startsWith(`${f.href}.`)))) {
        throw new PackageError(mfPath, `lists ${file}, which the descriptor's References do not name`);
      } else if (memberPath(dir, file) === null) {
        throw new PackageError(mfPath, `lists ${file}, which the package lacks`);
      }
    }
    if (!manifest.has(ovfName)) throw new PackageError(mfPath, `does not list the descriptor ${ovfName}`);
  } else notes.push(`${ovfPath} has no manifest (${path.basename(mfPath)}): its files were not verified`);
  if (fs.existsSync(`${base}.cert`)) notes.push(`the certificate ${path.basename(base)}.cert was not verified (Strata checks the manifest's digests, not signatures)`);
  // Every disk's files are there and the size the descriptor says, before the importer starts.
  const plan = descriptor.disks.flatMap((d) => {
    if (d.file === null) return [];
    const parts = partsOf(dir, d.file);
    if (parts === null) throw new PackageError(ovfPath, `disk ${d.diskId}: its file ${d.file.href} is missing from the package`);
    const stored = parts.reduce((n, p) => n + fs.statSync(p.path).size, 0);
    if (d.file.size !== null && stored !== d.file.size) throw new PackageError(path.join(dir, d.file.href), `is ${stored} bytes, but the descriptor says ${d.file.size} (${stored > d.file.size ? 'larger than declared' : 'cut short'})`);
    return [{ disk: packageDisk(d, ovfPath), parts, stored }];
  });
  await opts.onDescriptor?.(descriptor);
  for (const { disk, parts, stored } of plan) {
    if (opts.signal?.aborted) throw new Error(`reading ${opts.name} was interrupted`);
    for (const part of parts) {
      const entry = manifest?.get(part.href);
      if (manifest !== null && entry === undefined) notes.push(`${part.href} is not in the manifest, so it was not verified`);
      if (entry) {
        const bad = mismatch(entry, await hashFile(part.path, entry), mfPath);
        if (bad) throw bad;
      }
    }
    const name = path.join(dir, disk.file.href);
    if (disk.file.compression === null && disk.file.chunkSize === null) {
      if (disk.format === 'raw' && stored > disk.capacity) throw new PackageError(name, `is ${stored} bytes, more than its declared capacity of ${disk.capacity} bytes`);
      const source = fileSource(parts[0]!.path, name);
      try {
        await opts.onDisk(disk, source);
      } finally {
        await source.close();
      }
      continue;
    }
    const chain = diskChain(disk, name, disk.file.chunkSize === null ? stored : disk.file.size);
    const decode = startDecode(chain, (source) => opts.onDisk(disk, source));
    let readFailure: { err: unknown } | undefined;
    try {
      for (const part of parts) for await (const chunk of fs.createReadStream(part.path)) await feed(chain.input, chunk as Buffer);
      chain.input.end();
    } catch (err) {
      readFailure = { err };
      chain.fail(err as Error);
    }
    await decode.done;
    if (readFailure) throw readFailure.err;
    if (decode.failure) throw decode.failure.err;
  }
  return { descriptor, manifest: manifest === null ? null : mfPath, certificate: fs.existsSync(`${base}.cert`) ? `${base}.cert` : null, notes };
}
