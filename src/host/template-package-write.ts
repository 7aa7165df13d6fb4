import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import type { DiskFormat } from '../image/image-reader.js';
import { manifestText } from '../package/manifest.js';
import { diskFileName, ovfText, sha256File, writeDisks, type ExportedDisk, type ExportPackageKind, type ExportPlan, type TemplateSource } from './template-export.js';

export interface PackageWriteRequest {
  source: TemplateSource;
  plan: ExportPlan;
  kind: ExportPackageKind;
  /** ova: the file; ovf: the directory; xml: the .xml, disks beside it. */
  dest: string;
  format: DiskFormat;
  subformat: string | undefined;
  force: boolean;
  /** xml: the NBD server the domain's disks point at. */
  nbd: string;
  pool: string;
  progress: (done: number) => void;
  signal?: AbortSignal;
}

export interface PackageWritten {
  /** What was written, the package's main file first. */
  files: string[];
  disks: ExportedDisk[];
}

/**
 * Writes a template package. Nothing is left behind on failure: an OVA is
 * put together in a folder beside DEST and renamed in at the end, an OVF
 * directory or an XML's files are removed.
 */
export async function writeTemplatePackage(req: PackageWriteRequest): Promise<PackageWritten> {
  switch (req.kind) {
    case 'ovf':
      return writeOvfDir(req, req.dest);
    case 'ova':
      return writeOva(req);
    case 'xml':
      throw new Error('--package xml: not written yet');
  }
}

function refuseExisting(target: string, force: boolean, dir: boolean): void {
  if (!fs.existsSync(target)) return;
  const st = fs.statSync(target);
  if (dir ? !st.isDirectory() : !st.isFile()) throw new Error(`${target} exists and is not a ${dir ? 'directory' : 'regular file'}`);
  if (dir && fs.readdirSync(target).length === 0) return;
  if (!force) throw new Error(`${target} already exists (use --force to overwrite it)`);
}

/** The descriptor's base name: the template's. */
function baseName(req: PackageWriteRequest): string {
  return req.plan.templates[0]!.name;
}

async function writeOvfDir(req: PackageWriteRequest, dir: string, checkDest = true): Promise<PackageWritten> {
  if (checkDest) refuseExisting(dir, req.force, true);
  const made = !fs.existsSync(dir);
  fs.mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  try {
    const base = baseName(req);
    const ovf = `${base}.ovf`;
    const mf = `${base}.mf`;
    for (const f of [ovf, mf]) fs.rmSync(path.join(dir, f), { force: true });
    for (const t of req.plan.templates) fs.rmSync(path.join(dir, diskFileName(t.name, req.format)), { force: true });
    const disks = await writeDisks(req.source, req.plan, dir, req.format, req.subformat, req.progress, req.signal);
    written.push(...disks.map((d) => d.file));
    fs.writeFileSync(path.join(dir, ovf), ovfText(req.plan, disks));
    written.push(ovf);
    const sums = [];
    for (const f of [ovf, ...disks.map((d) => d.file)]) sums.push({ file: f, sha256: await sha256File(path.join(dir, f)) });
    fs.writeFileSync(path.join(dir, mf), manifestText(sums));
    written.push(mf);
    return { files: [path.join(dir, ovf), path.join(dir, mf), ...disks.map((d) => path.join(dir, d.file))], disks };
  } catch (err) {
    if (made) fs.rmSync(dir, { recursive: true, force: true });
    else for (const f of written) fs.rmSync(path.join(dir, f), { force: true });
    throw err;
  }
}

/** An OVA: the OVF directory written beside DEST, then tarred in OVF's order (descriptor, manifest, disks) and renamed into place. */
async function writeOva(req: PackageWriteRequest): Promise<PackageWritten> {
  refuseExisting(req.dest, req.force, false);
  const staging = `${req.dest}.parts-${process.pid}`;
  fs.rmSync(staging, { recursive: true, force: true });
  const partial = `${req.dest}.partial-${process.pid}`;
  try {
    const dir = await writeOvfDir(req, staging, false);
    await tarFiles(dir.files, partial);
    fs.renameSync(partial, req.dest);
    return { files: [req.dest], disks: dir.disks };
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
    fs.rmSync(partial, { force: true });
  }
}

/** A ustar archive of `files` in the order given, each under its base name. */
async function tarFiles(files: readonly string[], out: string): Promise<void> {
  const pack = tar.pack();
  const done = pipeline(pack, fs.createWriteStream(out, { flags: 'wx' }));
  for (const f of files) {
    const st = fs.statSync(f);
    const entry = pack.entry({ name: path.basename(f), size: st.size, mode: 0o644, mtime: st.mtime, type: 'file' });
    await pipeline(fs.createReadStream(f), entry);
  }
  pack.finalize();
  await done;
  const fd = fs.openSync(out, 'r');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
}
