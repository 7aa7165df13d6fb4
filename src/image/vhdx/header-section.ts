import { ImageFormatError, UnsupportedImageError } from '../errors.js';
import { structureChecksum } from './crc32c.js';
import { BAT_REGION, guidText, METADATA_REGION } from './guid.js';

export const KIB = 1024;
export const MIB = 1024 * 1024;
/** The file identifier, two headers and two region tables: the first 1 MiB holds them, in its first 320 KiB. */
export const HEADER_SECTION = MIB;
export const HEADER_BYTES = 320 * KIB;
const HEADERS = [64 * KIB, 128 * KIB];
const REGION_TABLES = [192 * KIB, 256 * KIB];

export interface Region {
  offset: number;
  length: number;
}

export interface HeaderSection {
  log: Region;
  bat: Region;
  metadata: Region;
}

/**
 * The current header (the valid one with the higher sequence number) and
 * the first valid region table. A log that holds entries is refused: its
 * writes are not in the blocks yet, and replaying it is for the tools that
 * own the file.
 */
export function parseHeaderSection(name: string, head: Buffer): HeaderSection {
  if (head.length < HEADER_BYTES) throw new ImageFormatError(name, head.length, 'the file ends inside the VHDX header section');
  if (head.toString('latin1', 0, 8) !== 'vhdxfile') throw new ImageFormatError(name, 0, 'no VHDX file identifier ("vhdxfile")');
  const headers = HEADERS.map((at) => ({ at, buf: head.subarray(at, at + 4 * KIB) })).filter(({ buf }) => buf.toString('latin1', 0, 4) === 'head' && structureChecksum(buf) === buf.readUInt32LE(4));
  if (headers.length === 0) throw new ImageFormatError(name, HEADERS[0]!, 'neither VHDX header is valid (signature or CRC-32C checksum)');
  const current = headers.reduce((a, b) => (b.buf.readBigUInt64LE(8) > a.buf.readBigUInt64LE(8) ? b : a));
  const h = current.buf;
  if (h.readUInt16LE(66) !== 1) throw new UnsupportedImageError(name, `VHDX version ${h.readUInt16LE(66)}`);
  if (h.subarray(48, 64).some((b) => b !== 0)) {
    throw new UnsupportedImageError(name, 'replaying the log of a VHDX that was not closed cleanly (open it in Hyper-V, or run qemu-img check -r all on it, first)');
  }
  const log = { offset: Number(h.readBigUInt64LE(72)), length: h.readUInt32LE(68) };
  const table = REGION_TABLES.map((at) => ({ at, buf: head.subarray(at, at + 64 * KIB) })).find(({ buf }) => buf.toString('latin1', 0, 4) === 'regi' && structureChecksum(buf) === buf.readUInt32LE(4) && buf.readUInt32LE(8) <= 2047);
  if (!table) throw new ImageFormatError(name, REGION_TABLES[0]!, 'neither VHDX region table is valid (signature, CRC-32C checksum or entry count)');
  let bat: Region | undefined;
  let metadata: Region | undefined;
  for (let i = 0; i < table.buf.readUInt32LE(8); i++) {
    const e = table.buf.subarray(16 + 32 * i, 48 + 32 * i);
    const guid = guidText(e.subarray(0, 16));
    const region = { offset: Number(e.readBigUInt64LE(16)), length: e.readUInt32LE(24) };
    const at = table.at + 16 + 32 * i;
    if (region.offset < HEADER_SECTION || region.offset % MIB !== 0 || region.length === 0 || region.length % MIB !== 0) {
      throw new ImageFormatError(name, at, `region ${guid} at ${region.offset} (${region.length} bytes) is not whole MiBs past the header section`);
    }
    if (guid === BAT_REGION) bat = region;
    else if (guid === METADATA_REGION) metadata = region;
    else if (e.readUInt32LE(28) & 1) throw new UnsupportedImageError(name, `the required VHDX region ${guid}`);
  }
  if (!bat || !metadata) throw new ImageFormatError(name, table.at, `the region table has no ${bat ? 'metadata' : 'BAT'} region`);
  return { log, bat, metadata };
}
