import type { ByteSource } from './byte-source.js';
import { detectFormat, formatName, HEAD_BYTES, TAIL_BYTES } from './detect.js';
import { UnsupportedImageError } from './errors.js';
import type { DiskFormat, ImageReader, OpenReader } from './image-reader.js';
import type { ImageWriter } from './image-writer.js';
import { openQcow2 } from './qcow2/reader.js';
import { writeQcow2 } from './qcow2/writer.js';
import { openRaw, writeRaw } from './raw.js';
import { openVhd } from './vhd/reader.js';
import { writeVhd } from './vhd/writer.js';
import { openVhdx } from './vhdx/reader.js';
import { writeVhdx } from './vhdx/writer.js';
import { openVmdk } from './vmdk/reader.js';
import { writeVmdk } from './vmdk/writer.js';

/** The reader of each format Strata reads natively. */
const readers: Record<DiskFormat, OpenReader> = {
  raw: openRaw,
  qcow2: openQcow2,
  vmdk: openVmdk,
  vhd: openVhd,
  vhdx: openVhdx,
};

/** The writer of each format Strata writes. */
const writers: Record<DiskFormat, ImageWriter> = {
  raw: writeRaw,
  qcow2: writeQcow2,
  vmdk: writeVmdk,
  vhd: writeVhd,
  vhdx: writeVhdx,
};

export const DISK_FORMATS: readonly DiskFormat[] = ['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx'];

export function isDiskFormat(name: string): name is DiskFormat {
  return (DISK_FORMATS as readonly string[]).includes(name);
}

export function writerFor(format: DiskFormat): ImageWriter {
  return writers[format];
}

/**
 * The format of the image in `source`, from its magic: its first bytes, and
 * its last ones when the source can be read there (a fixed VHD's footer).
 */
export async function sniffFormat(source: ByteSource): Promise<DiskFormat> {
  const head = await source.read(0, HEAD_BYTES);
  const tail = source.seekable && source.size !== null && source.size >= TAIL_BYTES ? await source.read(source.size - TAIL_BYTES, TAIL_BYTES) : undefined;
  const found = detectFormat(head, tail);
  if (found === null) return 'raw';
  if (!isDiskFormat(found)) throw new UnsupportedImageError(source.name, `the ${formatName(found)} format`);
  return found;
}

/**
 * Opens the image in `source` as `format`, or as what its magic says. A
 * forward-only source cannot be sniffed without losing its first bytes, so
 * its format must be given (a package's descriptor says it).
 */
export async function openImage(source: ByteSource, format?: DiskFormat): Promise<ImageReader> {
  if (format === undefined && !source.seekable) throw new Error(`${source.name}: the format of a stream must be given`);
  const f = format ?? (await sniffFormat(source));
  return readers[f](source);
}
