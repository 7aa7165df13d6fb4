import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import tar, { type Extract } from 'tar-stream';
import type { ByteSource } from '../image/byte-source.js';
import { PackageError } from './errors.js';
import { checkHref, chunkName } from './href.js';
import { DIGEST_ALGORITHMS, Digests, MAX_MANIFEST_BYTES, mismatch, parseManifest, type ManifestEntry } from './manifest.js';
import { parseOvf, type OvfDescriptor, type OvfFile } from './ovf-descriptor.js';
import { diskChain, feed, packageDisk, startDecode, type DiskChain, type DiskDecode, type PackageDisk } from './package-disk.js';
import { MAX_DESCRIPTOR_BYTES } from './xml-tree.js';

export interface ReadPackageOptions {
  /** The package as messages name it: a path or URL. */
  name: string;
  /** Called once the descriptor is parsed and checked, before any disk: the place to refuse early or make volumes. */
  onDescriptor?: (descriptor: OvfDescriptor) => Promise<void> | void;
  /**
   * Called for each disk with a file, in the order the package holds them,
   * with its decoded bytes; the next disk waits until it resolves. The
   * manifest's check of a disk ends after it returns: a mismatch then fails
   * the whole read, so the importer must undo what it wrote when the read fails.
   */
  onDisk: (disk: PackageDisk, source: ByteSource) => Promise<void>;
  signal?: AbortSignal;
}

export interface PackageResult {
  descriptor: OvfDescriptor;
  /** The manifest checked, or null when the package has none (then nothing was verified). */
  manifest: string | null;
  /** A certificate the package carries; it is not verified. */
  certificate: string | null;
  /** What was left out or not checked, one line each. */
  notes: string[];
}

/** A member of the tar as tar-stream hands it out. */
type Entry = Extract extends AsyncIterable<infer T> ? T : never;

/** One disk file under way: its chunks so far and the importer reading it. */
interface Session {
  disk: PackageDisk;
  chain: DiskChain;
  /** The importer reading it. */
  decode: DiskDecode;
  /** Bytes of the file stored so far, and the chunk expected next. */
  stored: number;
  nextChunk: number;
}

/**
 * Reads an OVA once, front to back, from `input` (a file or HTTP stream):
 * the .ovf first, then the manifest (.mf) and certificate (.cert) when
 * present, then the files. Every file is hashed as it streams by and
 * checked against the manifest; disks go to `onDisk` as they come,
 * gunzipped and joined from their chunks where the descriptor says so.
 */
export async function readOva(input: Readable, opts: ReadPackageOptions): Promise<PackageResult> {
  const extract = tar.extract();
  const flowing = pipeline(input, extract);
  flowing.catch(() => undefined);
  const abort = (): void => {
    input.destroy(new Error(`reading ${opts.name} was interrupted`));
  };
  opts.signal?.addEventListener('abort', abort, { once: true });
  let session: Session | null = null;
  try {
    const result = await readEntries(extract, opts, (s) => (session = s));
    await flowing;
    return result;
  } catch (err) {
    input.destroy();
    extract.destroy();
    const failure = translate(err, opts.name);
    // The importer's next read fails with the same error; wait for it to stop, so that what it wrote can be undone after.
    const open = session as Session | null;
    if (open) {
      open.chain.fail(failure instanceof Error ? failure : new Error(String(failure)));
      open.chain.input.destroy();
      await open.decode.done;
    }
    throw failure;
  } finally {
    opts.signal?.removeEventListener('abort', abort);
  }
}

/** tar-stream's own words for a cut tar, said with the package's name. */
function translate(err: unknown, name: string): unknown {
  if (err instanceof Error && /unexpected end of data/i.test(err.message)) return new PackageError(name, 'ends in the middle of the tar (truncated: the package is incomplete)');
  if (err instanceof Error && /invalid tar header|checksum/i.test(err.message)) return new PackageError(name, `is not a valid tar (${err.message})`);
  return err;
}

async function readEntries(extract: Extract, opts: ReadPackageOptions, track: (s: Session | null) => void): Promise<PackageResult> {
  const pkg = opts.name;
  let descriptor: OvfDescriptor | null = null;
  let ovfName = '';
  let manifest: Map<string, ManifestEntry> | null = null;
  let manifestName: string | null = null;
  let certificate: string | null = null;
  const notes: string[] = [];
  /** Digests of members read before the manifest, to check when it comes. */
  const early = new Map<string, Digests>();
  const seen = new Set<string>();
  const done = new Set<OvfFile>();
  let session: Session | null = null;

  const verify = (name: string, digests: Digests): void => {
    if (manifest === null) {
      early.set(name, digests);
      return;
    }
    const entry = manifest.get(name);
    if (entry === undefined) {
      notes.push(`${name} is not in the manifest, so it was not verified`);
      return;
    }
    const bad = mismatch(entry, digests, manifestName!);
    if (bad) throw bad;
  };
  const algorithms = (name: string): readonly typeof DIGEST_ALGORITHMS[number][] => {
    if (manifest === null) return DIGEST_ALGORITHMS;
    const e = manifest.get(name);
    return e ? [e.algorithm] : [];
  };
  const closeSession = async (): Promise<void> => {
    if (!session) return;
    const s = session;
    session = null;
    track(null);
    const f = s.disk.file;
    if (f.chunkSize !== null && f.size !== null && s.stored !== f.size) throw new PackageError(pkg, `${f.href}: its chunks hold ${s.stored} bytes, but the descriptor says ${f.size} (a chunk is missing)`);
    s.chain.input.end();
    await s.decode.done;
    if (s.decode.failure) throw s.decode.failure.err;
    done.add(f);
  };
  const readAll = async (entry: Entry, max: number, name: string): Promise<{ data: Buffer; digests: Digests }> => {
    if ((entry.header.size ?? 0) > max) throw new PackageError(pkg, `${name} is ${entry.header.size} bytes, more than the ${max} allowed for it`);
    const digests = new Digests(algorithms(name));
    const parts: Buffer[] = [];
    for await (const chunk of entry as AsyncIterable<Buffer>) {
      digests.update(chunk);
      parts.push(chunk);
    }
    return { data: Buffer.concat(parts), digests };
  };

  for await (const entry of extract) {
    const h = entry.header;
    const name = h.name.replace(/^(\.\/)+/, '');
    if (h.type === 'directory') {
      entry.resume();
      continue;
    }
    if (h.type !== 'file' && h.type !== 'contiguous-file') throw new PackageError(pkg, `the member ${name} is a ${h.type ?? 'special file'}; an OVA holds only files`);
    checkHref(name, pkg);
    if (seen.has(name)) throw new PackageError(pkg, `holds ${name} twice`);
    seen.add(name);
    if (descriptor === null) {
      if (!name.toLowerCase().endsWith('.ovf')) throw new PackageError(pkg, `its first member is ${name}; an OVA starts with its .ovf descriptor`);
      const { data, digests } = await readAll(entry, MAX_DESCRIPTOR_BYTES, name);
      ovfName = name;
      descriptor = parseOvf(data.toString('utf8'), `${name} in ${pkg}`, 'ova');
      verify(name, digests);
      await opts.onDescriptor?.(descriptor);
      continue;
    }
    const lower = name.toLowerCase();
    if (lower.endsWith('.mf') && manifest === null) {
      await closeSession();
      const { data } = await readAll(entry, MAX_MANIFEST_BYTES, name);
      manifestName = `${name} in ${pkg}`;
      manifest = parseManifest(data.toString('utf8'), manifestName);
      for (const file of manifest.keys()) {
        if (file !== ovfName && !descriptor.files.some((f) => f.href === file || (f.chunkSize !== null && file.startsWith(`${f.href}.`)))) {
          throw new PackageError(manifestName, `lists ${file}, which the descriptor's References do not name`);
        }
      }
      if (!manifest.has(ovfName)) throw new PackageError(manifestName, `does not list the descriptor ${ovfName}`);
      for (const [n, d] of early) verify(n, d);
      early.clear();
      continue;
    }
    if (lower.endsWith('.cert') && certificate === null) {
      await closeSession();
      certificate = name;
      notes.push(`the certificate ${name} was not verified (Strata checks the manifest's digests, not signatures)`);
      entry.resume();
      continue;
    }
    const match = findFile(descriptor, name);
    if (!match) {
      await closeSession();
      notes.push(`${name} is not in the descriptor's References; left out`);
      entry.resume();
      continue;
    }
    const { file, chunk } = match;
    const size = h.size ?? 0;
    if (file.chunkSize !== null && size > file.chunkSize) throw new PackageError(pkg, `${name} is ${size} bytes, more than the chunk size ${file.chunkSize} the descriptor gives`);
    if (file.chunkSize === null && file.size !== null && size !== file.size) {
      throw new PackageError(pkg, `${name} is ${size} bytes in the tar, but the descriptor says ${file.size} (${size > file.size ? 'larger than declared' : 'cut short'})`);
    }
    const disk = descriptor.disks.find((d) => d.file === file);
    if (session && (session.disk.file !== file || session.nextChunk !== chunk)) await closeSession();
    if (!disk) {
      const digests = new Digests(algorithms(name));
      for await (const c of entry as AsyncIterable<Buffer>) digests.update(c);
      verify(name, digests);
      done.add(file);
      continue;
    }
    if (done.has(file)) throw new PackageError(pkg, `${name} comes after the rest of ${file.href} was read (its chunks are out of order)`);
    if (!session) {
      if (chunk > 0) throw new PackageError(pkg, `${name} comes before ${chunkName(file.href, 0)} (chunks must be in order)`);
      const pd = packageDisk(disk, `${ovfName} in ${pkg}`);
      const chain = diskChain(pd, `${file.href} in ${pkg}`, file.chunkSize === null ? size : file.size);
      const s: Session = { disk: pd, chain, decode: startDecode(chain, (source) => opts.onDisk(pd, source)), stored: 0, nextChunk: 0 };
      session = s;
      track(s);
    }
    const s = session;
    const digests = new Digests(algorithms(name));
    for await (const c of entry as AsyncIterable<Buffer>) {
      digests.update(c);
      await feed(s.chain.input, c);
      if (s.decode.failure) throw s.decode.failure.err;
    }
    s.stored += size;
    s.nextChunk++;
    try {
      verify(name, digests);
    } catch (err) {
      s.chain.fail(err as Error);
      throw err;
    }
    if (file.chunkSize === null || (file.size !== null && s.stored >= file.size)) await closeSession();
  }
  await closeSession();
  if (descriptor === null) throw new PackageError(pkg, 'is an empty tar; an OVA starts with its .ovf descriptor');
  for (const d of descriptor.disks) {
    if (d.file && !done.has(d.file)) throw new PackageError(pkg, `disk ${d.diskId}: its file ${d.file.href} is missing from the package`);
  }
  if (manifest !== null) {
    for (const file of (manifest as Map<string, ManifestEntry>).keys()) {
      if (!seen.has(file)) throw new PackageError(manifestName!, `lists ${file}, which the package lacks`);
    }
  } else {
    notes.push(`${pkg} has no manifest: its files were not verified`);
  }
  return { descriptor, manifest: manifestName, certificate, notes };
}

/** The References/File a member is, or a chunk of: `href` itself, or `href.NNNNNNNNN`. */
function findFile(descriptor: OvfDescriptor, name: string): { file: OvfFile; chunk: number } | null {
  for (const f of descriptor.files) {
    if (f.chunkSize === null) {
      if (f.href === name) return { file: f, chunk: 0 };
      continue;
    }
    const rest = name.startsWith(`${f.href}.`) ? name.slice(f.href.length + 1) : '';
    if (/^\d{9}$/.test(rest)) return { file: f, chunk: Number(rest) };
  }
  return null;
}
