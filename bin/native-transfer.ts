import fs from 'node:fs';
import path from 'node:path';
import type { BlockDevice } from '../src/blockdev/index.js';
import { fileSource, streamSource, type ByteSource } from '../src/image/byte-source.js';
import { deviceContent } from '../src/image/device-content.js';
import { fileSink, streamSink } from '../src/image/file-sink.js';
import { isDiskFormat, writerFor, DISK_FORMATS } from '../src/image/formats.js';
import type { DiskFormat } from '../src/image/image-reader.js';
import { closeChain, openChain, snapshotNames, type ChainLayer } from '../src/host/image-chain.js';
import { importChain, volumeTarget, type ChainImportResult } from '../src/host/image-import.js';
import { systemReason } from '../src/host/image-source.js';
import { jobsFor } from '../src/host/jobs.js';
import { withPool } from '../src/host/open-pool.js';
import { volumeRuns, type Mappable } from '../src/host/volume-runs.js';
import type { ControlClient } from '../src/host/control-client.js';
import { PoolError, type Pool } from '../src/qcowlike/index.js';
import { JobProgressBar } from './job-progress.js';
import { interrupt } from './interruptible.js';
import type { ProgressBar } from './output.js';
import { servedVolume, writeServed } from './served-transfer.js';
import { formatSize } from './size.js';

/**
 * Import and export of images in the formats Strata decodes and encodes
 * itself (src/image): qcow2, VMDK, VHD, VHDX, and raw through the same
 * contracts. A backing chain comes in as snapshots under the volume, base
 * first, or flattened into it.
 */

/** `--format NAME` checked against the formats Strata knows. */
export function formatOption(text: string | undefined, option = '--format'): DiskFormat | undefined {
  if (text === undefined) return undefined;
  if (!isDiskFormat(text)) throw new Error(`${option} ${text}: not an image format (${DISK_FORMATS.join(', ')})`);
  return text;
}

const SUBFORMATS: Partial<Record<DiskFormat, readonly string[]>> = { vmdk: ['monolithicSparse', 'streamOptimized'], vhd: ['dynamic', 'fixed'] };

/** `--subformat NAME` for the format written; refused for a format that has none. */
export function subformatOption(format: DiskFormat, text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const known = SUBFORMATS[format];
  if (!known) throw new Error(`--subformat ${text}: ${format} images have no subformats`);
  if (!known.includes(text)) throw new Error(`--subformat ${text}: ${format} images are ${known.join(' or ')}`);
  return text;
}

/** The format an export writes when --format is not given: FILE's extension says it, else raw. */
export function formatFromName(file: string): DiskFormat {
  const ext = path.extname(file).toLowerCase();
  const byExt: Record<string, DiskFormat> = { '.qcow2': 'qcow2', '.vmdk': 'vmdk', '.vhd': 'vhd', '.vpc': 'vhd', '.vhdx': 'vhdx' };
  return byExt[ext] ?? 'raw';
}

export interface NativeImport {
  home: string;
  poolName: string;
  name: string;
  ref: string;
  fileArg: string;
  format: DiskFormat | undefined;
  flatten: boolean;
  wanted: number | undefined;
  sizeText: string | undefined;
  force: boolean;
  direct: boolean;
  control: ControlClient | null;
}

export interface NativeImportResult extends ChainImportResult {
  file: string;
  format: DiskFormat;
  subformat: string | null;
  virtualSize: number;
  /** Bytes of the image files read (every file of the chain). */
  fileSize: number;
  /** The chain's files below the top, base first. */
  backing: string[];
  flattened: boolean;
  created: boolean;
  replacedIncomplete: boolean;
  volumeSize: number;
  notes: string[];
}

/** Opens FILE (or stdin, read once) as an image source. */
function openTop(fileArg: string, format: DiskFormat | undefined): ByteSource {
  if (fileArg === '-' || fileArg === '/dev/stdin') {
    if (format === undefined) throw new Error('stdin: the format of an image read from a pipe must be given (--format)');
    return streamSource(process.stdin, 'stdin');
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(fileArg);
  } catch (err) {
    throw new Error(`cannot read ${fileArg}: ${systemReason(err)}`);
  }
  if (!st.isFile()) throw new Error(`${fileArg} is not a regular file`);
  try {
    return fileSource(fileArg);
  } catch (err) {
    throw new Error(`cannot read ${fileArg}: ${systemReason(err)}`);
  }
}

export async function importNative(a: NativeImport): Promise<NativeImportResult> {
  const top = openTop(a.fileArg, a.format);
  let bar: ProgressBar | undefined;
  let layers: ChainLayer[] = [];
  // The bar counts bytes of the image files read; the chain's layers are read one after another.
  const onRead = (): void => bar?.update(layers.reduce((sum, l) => sum + l.source.reached, 0));
  try {
    layers = await openChain(top, top.name, a.format, onRead);
  } catch (err) {
    await top.close().catch(() => undefined);
    throw err;
  }
  try {
    const head = layers[layers.length - 1]!.reader;
    const total = layers.reduce((sum, l) => sum + (l.source.size ?? l.reader.virtualSize), 0);
    const spec = { kind: 'import' as const, target: `${a.ref} from ${top.name}`, total, restart: `strata import ${a.ref} ${a.fileArg} (an incomplete volume is created anew)`, signal: interrupt.signal };
    const files = layers.map((l) => l.file);
    const names = a.flatten ? null : snapshotNames(files.slice(0, -1));
    const result = await jobsFor(a.home, a.poolName).run(spec, async (job) => {
      bar = new JobProgressBar(`import ${a.ref}`, total, job);
      try {
        return a.control ? await intoServed(a, a.control, layers, names) : await intoPool(a, layers, names);
      } finally {
        bar.finish();
      }
    });
    return {
      file: top.name,
      format: head.format,
      subformat: head.subformat,
      virtualSize: head.virtualSize,
      fileSize: layers.reduce((sum, l) => sum + (l.source.size ?? l.source.reached), 0),
      backing: files.slice(0, -1),
      flattened: a.flatten && layers.length > 1,
      notes: layers.flatMap((l) => l.reader.notes.map((n) => `${l.file}: ${n}`)),
      ...result,
    };
  } finally {
    await closeChain(layers);
  }
}

/** The checks of an import into a volume that exists, or the size of one to create. */
function placement(a: NativeImport, layers: ChainLayer[], existing: { size: number; incomplete: boolean } | null): { exists: boolean; redo: boolean; size: number } {
  const virtual = layers[layers.length - 1]!.reader.virtualSize;
  const file = layers[layers.length - 1]!.file;
  const redo = existing?.incomplete === true;
  const exists = existing !== null && !redo;
  if (existing && exists) {
    if (a.wanted !== undefined && a.wanted !== existing.size) throw new Error(`volume ${a.ref} exists with size ${formatSize(existing.size)}; --size ${a.sizeText} only applies when import creates it`);
    if (existing.size < virtual) throw new Error(`${file} (${formatSize(virtual)} virtual) does not fit in ${a.ref} (${formatSize(existing.size)})`);
    if (layers.length > 1 && !a.flatten) throw new Error(`${file} has backing files, whose snapshots only a new volume can take: import it into a new volume, or give --flatten`);
    return { exists, redo, size: existing.size };
  }
  const size = a.wanted ?? virtual;
  if (size < virtual) throw new Error(`--size ${a.sizeText} is smaller than ${file} (${formatSize(virtual)} virtual)`);
  if (size === 0) throw new Error(`${file} is empty (0 bytes virtual): give --size to create ${a.ref}`);
  return { exists, redo, size };
}

type Outcome = ChainImportResult & { created: boolean; replacedIncomplete: boolean; volumeSize: number };

async function intoPool(a: NativeImport, layers: ChainLayer[], names: string[] | null): Promise<Outcome> {
  return withPool(a.home, a.poolName, { readOnly: false, direct: a.direct }, async ({ pool }) => {
    const existing = await pool.volumeInfo(a.name).catch((err: unknown) => {
      if (err instanceof PoolError && err.code === 'ENOENT') return null;
      throw err;
    });
    const { exists, redo, size } = placement(a, layers, existing);
    if (exists) {
      if (!a.force && (await holdsData(pool, a.name))) throw new Error(`volume ${a.ref} holds data; use --force to overwrite it`);
    } else {
      // An import that was cut short may have left snapshots of its base: all of it goes.
      if (redo) await pool.deleteVolumeChain(a.name);
      await pool.createVolume(a.name, size, { incomplete: true });
    }
    const { target, handle } = await volumeTarget(pool, a.name);
    try {
      const r = await importChain(layers, target, { fresh: !exists, snapshots: names, signal: interrupt.signal });
      if (exists) await handle().flush();
      else await pool.completeVolume(a.name);
      await handle().close();
      return { ...r, created: !exists, replacedIncomplete: redo, volumeSize: size };
    } catch (err) {
      await handle().close().catch(() => undefined);
      // What this import created goes whole, its snapshots with it (if that fails too, the volume stays marked incomplete).
      if (!exists) await pool.deleteVolumeChain(a.name).catch(() => undefined);
      throw err;
    }
  });
}

/**
 * Into a served pool: the volume is made over the control socket, each layer
 * written over its NBD export, and each snapshot taken as `strata snapshot
 * create` takes it, after a flush of what the export was sent.
 */
async function intoServed(a: NativeImport, control: ControlClient, layers: ChainLayer[], names: string[] | null): Promise<Outcome> {
  try {
    const existing = await servedVolume(control, a.name);
    const { exists, redo, size } = placement(a, layers, existing);
    if (!exists) {
      if (redo) await control.request({ op: 'volume-delete', volume: a.name, force: false });
      await control.request({ op: 'volume-create', volume: a.name, size, preallocation: 'off' });
    }
    const taken: string[] = [];
    const dropCreated = async (): Promise<void> => {
      if (exists) return;
      for (const snapshot of taken.reverse()) await control.request({ op: 'snapshot-delete', volume: a.name, snapshot }).catch(() => undefined);
      await control.request({ op: 'volume-delete', volume: a.name, force: true }).catch(() => undefined);
    };
    return await writeServed(control, { poolName: a.poolName, name: a.name, ref: a.ref, exists, force: a.force }, dropCreated, async (device) => {
      const target = {
        device: device as BlockDevice,
        snapshot: async (snapshot: string): Promise<BlockDevice> => {
          await device.flush();
          await control.request({ op: 'snapshot-create', refs: [{ volume: a.name, snapshot }], full: false });
          taken.push(snapshot);
          return device;
        },
      };
      const r = await importChain(layers, target, { fresh: !exists, snapshots: names, signal: interrupt.signal });
      return { ...r, created: !exists, replacedIncomplete: redo, volumeSize: size };
    });
  } finally {
    control.close();
  }
}

/** Whether any byte of the volume is allocated data (zero runs and holes do not count). */
export async function holdsData(pool: Pool, name: string): Promise<boolean> {
  const volume = await pool.openVolume(name, { readOnly: true });
  try {
    for await (const run of volumeRuns(volume)) if (!run.zero) return true;
    return false;
  } finally {
    await volume.close();
  }
}

export interface NativeExportResult {
  size: number;
  bytesWritten: number;
  format: DiskFormat;
  subformat: string | null;
  /** Bytes of the image file written. */
  fileSize: number;
}

/**
 * Writes a volume (or a served volume's NBD export) as an image of `format`
 * into FILE, opened by `open` (the checks of a raw export's target), or to
 * stdout; a file left half written is removed.
 */
export async function exportNative(volume: BlockDevice & Mappable, file: string, format: DiskFormat, subformat: string | undefined, open: () => number, bar: ProgressBar): Promise<NativeExportResult> {
  const writer = writerFor(format);
  const opts = { ...(subformat !== undefined ? { subformat } : {}), progress: (d: number) => bar.update(d), signal: interrupt.signal };
  if (file === '-') {
    try {
      const r = await writer(deviceContent(volume), streamSink(process.stdout, 'stdout'), opts);
      return { size: volume.size, bytesWritten: r.dataBytes, format, subformat: subformat ?? defaultSubformat(format), fileSize: r.fileSize };
    } finally {
      bar.finish();
    }
  }
  const fd = open();
  try {
    const r = await writer(deviceContent(volume), fileSink(fd, file), opts);
    fs.closeSync(fd);
    return { size: volume.size, bytesWritten: r.dataBytes, format, subformat: subformat ?? defaultSubformat(format), fileSize: r.fileSize };
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw err;
  } finally {
    bar.finish();
  }
}

function defaultSubformat(format: DiskFormat): string | null {
  return SUBFORMATS[format]?.[0] ?? null;
}
