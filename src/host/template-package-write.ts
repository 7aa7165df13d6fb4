import fs from 'node:fs';
import path from 'node:path';
import type { DiskFormat } from '../image/image-reader.js';
import { manifestText } from '../package/manifest.js';
import { writeOva } from '../package/ova-writer.js';
import { writeDomain } from '../package/libvirt-domain.js';
import type { ListenAddress } from '../nbd/server.js';
import { diskFileName, ovfText, sha256File, writeDisks, writeTemplateDisk, type ExportedDisk, type ExportPackageKind, type ExportPlan, type TemplateSource } from './template-export.js';

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
  nbd: ListenAddress;
  /** xml: the linked clone the domain boots (its other disks NAME-disk2, …). */
  clone: string;
  pool: string;
  progress: (done: number) => void;
  signal?: AbortSignal;
}

export interface PackageWritten {
  /** What was written, the package's main file first. */
  files: string[];
  disks: ExportedDisk[];
  /** xml: the clones the domain's disks are (made by `strata clone`, served by `strata serve`), as POOL/NAME. */
  clones?: string[];
}

/**
 * Writes a template package. Nothing is left behind on failure: an OVA is
 * put together under a name beside DEST and renamed in at the end; an OVF
 * directory's or an XML's files are removed.
 */
export async function writeTemplatePackage(req: PackageWriteRequest): Promise<PackageWritten> {
  switch (req.kind) {
    case 'ovf':
      return writeOvfDir(req, req.dest);
    case 'ova':
      return writeOvaFile(req);
    case 'xml':
      return writeDomainXml(req);
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

async function writeOvfDir(req: PackageWriteRequest, dir: string): Promise<PackageWritten> {
  refuseExisting(dir, req.force, true);
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
    const sizes = new Map(disks.map((d) => [d.file, d.fileSize]));
    fs.writeFileSync(path.join(dir, ovf), ovfText(req.plan, disks, (f) => sizes.get(f) ?? null));
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

/** An OVA, each disk written in its place in the tar; put together under a name beside DEST and renamed into place. */
async function writeOvaFile(req: PackageWriteRequest): Promise<PackageWritten> {
  refuseExisting(req.dest, req.force, false);
  const partial = `${req.dest}.partial-${process.pid}`;
  const planned = req.plan.templates.map((t) => ({ template: t.name, file: diskFileName(t.name, req.format), format: req.format, subformat: req.subformat ?? null, size: t.size }));
  const written = new Map<string, number>();
  let before = 0;
  try {
    const members = await writeOva(partial, {
      ovfName: `${baseName(req)}.ovf`,
      descriptor: (sizes) => ovfText(req.plan, planned, (f) => sizes.get(f) ?? null),
      disks: planned.map((d) => ({
        href: d.file,
        write: async (sink) => {
          const start = before;
          const r = await writeTemplateDisk(req.source, d.template, d.file, sink, req.format, req.subformat, (n) => req.progress(start + n), req.signal);
          written.set(d.file, r.dataBytes);
          before += d.size;
        },
      })),
    });
    const fd = fs.openSync(partial, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(partial, req.dest);
    const sizeOf = new Map(members.map((m) => [m.name, m.size]));
    return { files: [req.dest], disks: planned.map((d) => ({ ...d, fileSize: sizeOf.get(d.file) ?? 0, dataBytes: written.get(d.file) ?? 0 })) };
  } finally {
    fs.rmSync(partial, { force: true });
  }
}

/** The clones a domain export points at: CLONE for the first disk, CLONE-disk2, … */
export function cloneNames(clone: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => (i === 0 ? clone : `${clone}-disk${i + 1}`));
}

/**
 * A libvirt domain XML whose disks are Strata's NBD exports of the
 * template's clones (POOL/CLONE, … at `nbd`), so that `virsh define` of it
 * makes a guest that boots a clone once it is made and served; the
 * template's disks are written beside it too, as files, for a host that
 * has no Strata.
 */
async function writeDomainXml(req: PackageWriteRequest): Promise<PackageWritten> {
  refuseExisting(req.dest, req.force, false);
  const dir = path.dirname(req.dest);
  for (const t of req.plan.templates) refuseExisting(path.join(dir, diskFileName(t.name, req.format)), req.force, false);
  for (const t of req.plan.templates) fs.rmSync(path.join(dir, diskFileName(t.name, req.format)), { force: true });
  const clones = cloneNames(req.clone, req.plan.templates.length);
  const disks = await writeDisks(req.source, req.plan, dir, req.format, req.subformat, req.progress, req.signal);
  try {
    const exports = req.plan.settings.disks.map((d, i) => ({ disk: d.name, exportName: `${req.pool}/${clones[i]!}` }));
    fs.writeFileSync(req.dest, writeDomain(req.plan.settings, exports, req.nbd), { flag: 'w' });
    return { files: [req.dest, ...disks.map((d) => path.join(dir, d.file))], disks, clones: clones.map((c) => `${req.pool}/${c}`) };
  } catch (err) {
    for (const d of disks) fs.rmSync(path.join(dir, d.file), { force: true });
    throw err;
  }
}
