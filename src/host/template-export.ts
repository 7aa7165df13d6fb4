import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { BlockDevice } from '../blockdev/index.js';
import { deviceContent } from '../image/device-content.js';
import { fileSink } from '../image/file-sink.js';
import type { ByteSink } from '../image/image-writer.js';
import { writerFor } from '../image/formats.js';
import type { DiskFormat } from '../image/image-reader.js';
import { writeOvf, type OvfDiskFile } from '../package/ovf-write.js';
import { validateSettings, type TemplateSettings } from '../package/settings.js';
import type { TemplateInfo } from '../snapshot/index.js';
import type { Mappable } from './volume-runs.js';

export type ExportPackageKind = 'ova' | 'ovf' | 'xml';

/** Where an export reads templates: a pool held here, or a served pool's exports of them. */
export interface TemplateSource {
  info(template: string): Promise<TemplateInfo>;
  /** A read-only device on the template; closed by the caller. */
  open(template: string): Promise<BlockDevice & Mappable>;
}

export interface ExportedDisk {
  template: string;
  file: string;
  format: DiskFormat;
  subformat: string | null;
  size: number;
  fileSize: number;
  dataBytes: number;
}

export interface ExportPlan {
  settings: TemplateSettings;
  /** The templates that hold the disks, in the settings' order (the first is the one asked for). */
  templates: TemplateInfo[];
}

const EXTENSIONS: Record<DiskFormat, string> = { vmdk: 'vmdk', vhd: 'vhd', vhdx: 'vhdx', qcow2: 'qcow2', raw: 'img' };

/**
 * What an export writes: the template's settings (those of its package, or,
 * for a template made here, one disk on virtio with 1 CPU and 1 GiB), and
 * the templates of the disks they list. A disk whose template is gone is
 * refused naming it.
 */
export async function planExport(source: TemplateSource, name: string): Promise<ExportPlan> {
  const first = await source.info(name);
  const settings = first.settings
    ? validateSettings(first.settings)
    : validateSettings({ name, description: null, os: { ovfId: null, osType: null, osinfo: null, description: null }, cpus: 1, memoryBytes: 1 << 30, firmware: 'bios', disks: [{ name, capacity: first.size, bus: 'virtio', bootOrder: 1 }], networks: [], source: 'strata' });
  const templates: TemplateInfo[] = [];
  for (const [i, d] of settings.disks.entries()) {
    // The first disk is the template's own, whatever it was called when its settings were made (a template copy keeps them).
    if (i === 0) templates.push(first);
    else
      templates.push(
        await source.info(d.name).catch((err: unknown) => {
          throw new Error(`template ${name} lists the disk '${d.name}', whose template cannot be read: ${err instanceof Error ? err.message : String(err)}`);
        }),
      );
  }
  // Sizes as they are now (a template does not change, but settings may predate a copy).
  return { settings: { ...settings, disks: settings.disks.map((d, i) => ({ ...d, name: templates[i]!.name, capacity: templates[i]!.size })) }, templates };
}

/** The file name a disk gets in the package. */
export function diskFileName(template: string, format: DiskFormat): string {
  return `${template}.${EXTENSIONS[format]}`;
}

/** One template written as an image of `format` into `sink` (a file, or its place in an OVA). */
export async function writeTemplateDisk(source: TemplateSource, template: string, fileName: string, sink: ByteSink, format: DiskFormat, subformat: string | undefined, progress: (done: number) => void, signal?: AbortSignal): Promise<{ dataBytes: number; fileSize: number }> {
  const device = await source.open(template);
  try {
    const r = await writerFor(format)(deviceContent(device), sink, { ...(subformat ? { subformat } : {}), fileName, progress, ...(signal ? { signal } : {}) });
    return { dataBytes: r.dataBytes, fileSize: r.fileSize };
  } finally {
    await device.close();
  }
}

/** Writes each disk of the plan as `format` into `dir`; removes what it wrote when it fails. */
export async function writeDisks(source: TemplateSource, plan: ExportPlan, dir: string, format: DiskFormat, subformat: string | undefined, progress: (done: number) => void, signal?: AbortSignal): Promise<ExportedDisk[]> {
  const out: ExportedDisk[] = [];
  let before = 0;
  for (const t of plan.templates) {
    const file = diskFileName(t.name, format);
    const full = path.join(dir, file);
    const fd = fs.openSync(full, 'wx', 0o644);
    try {
      const start = before;
      const r = await writeTemplateDisk(source, t.name, file, fileSink(fd, full), format, subformat, (n) => progress(start + n), signal);
      out.push({ template: t.name, file, format, subformat: subformat ?? null, size: t.size, fileSize: fs.fstatSync(fd).size, dataBytes: r.dataBytes });
    } catch (err) {
      fs.rmSync(full, { force: true });
      throw err;
    } finally {
      fs.closeSync(fd);
    }
    before += t.size;
  }
  return out;
}

/** The OVF descriptor of the plan with its disks as written (a size null: not known yet, left out). */
export function ovfText(plan: ExportPlan, disks: readonly Pick<ExportedDisk, 'template' | 'file' | 'format' | 'subformat'>[], sizeOf: (file: string) => number | null): string {
  const files: OvfDiskFile[] = disks.map((d) => ({ disk: d.template, href: d.file, size: sizeOf(d.file), format: d.format, subformat: d.subformat }));
  return writeOvf(plan.settings, files);
}

/** SHA-256 of a file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
