import crypto from 'node:crypto';
import type { Geometry } from './geometry.js';

/** Bytes of the footer (and of its copy at the start of a dynamic disk). */
export const FOOTER_SIZE = 512;
/** data_offset of a fixed disk: no header follows. */
export const NO_OFFSET = 0xffff_ffff_ffff_ffffn;
/** VHD timestamps count seconds from 2000-01-01 UTC. */
const EPOCH_2000 = 946684800;

export type DiskType = 'fixed' | 'dynamic' | 'differencing';
const TYPES: Record<number, DiskType> = { 2: 'fixed', 3: 'dynamic', 4: 'differencing' };
const TYPE_CODES: Record<DiskType, number> = { fixed: 2, dynamic: 3, differencing: 4 };

export interface Footer {
  /** Offset of the dynamic header; null on a fixed disk. */
  dataOffset: number | null;
  creatorApp: string;
  currentSize: number;
  geometry: Geometry;
  type: DiskType;
}

/** One's complement of the byte sum with the checksum field (at `at`) counted as zero. */
export function vhdChecksum(buf: Buffer, at: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) if (i < at || i >= at + 4) sum += buf[i]!;
  return ~sum >>> 0;
}

export const isFooter = (buf: Buffer): boolean => buf.length >= FOOTER_SIZE && buf.toString('latin1', 0, 8) === 'conectix';

/** Parses a footer; the message of what is wrong, to be placed by the caller, or the footer. */
export function parseFooter(buf: Buffer): Footer | string {
  if (!isFooter(buf)) return 'no VHD footer ("conectix")';
  if (vhdChecksum(buf.subarray(0, FOOTER_SIZE), 64) !== buf.readUInt32BE(64)) return 'the footer checksum does not match';
  const type = TYPES[buf.readUInt32BE(60)];
  if (!type) return `unknown disk type ${buf.readUInt32BE(60)}`;
  const dataOffset = buf.readBigUInt64BE(16);
  const currentSize = buf.readBigUInt64BE(48);
  if (currentSize > BigInt(Number.MAX_SAFE_INTEGER)) return `a current size of ${currentSize} bytes`;
  if (type !== 'fixed' && dataOffset > BigInt(Number.MAX_SAFE_INTEGER)) return `a dynamic header offset of ${dataOffset}`;
  return {
    dataOffset: type === 'fixed' ? null : Number(dataOffset),
    creatorApp: buf.toString('latin1', 28, 32),
    currentSize: Number(currentSize),
    geometry: { cylinders: buf.readUInt16BE(56), heads: buf[58]!, sectorsPerTrack: buf[59]! },
    type,
  };
}

export function encodeFooter(f: Footer): Buffer {
  const buf = Buffer.alloc(FOOTER_SIZE);
  buf.write('conectix', 0, 'latin1');
  buf.writeUInt32BE(2, 8); // features: the reserved bit the specification sets
  buf.writeUInt32BE(0x0001_0000, 12);
  buf.writeBigUInt64BE(f.dataOffset === null ? NO_OFFSET : BigInt(f.dataOffset), 16);
  buf.writeUInt32BE(Math.max(0, Math.floor(Date.now() / 1000) - EPOCH_2000) >>> 0, 24);
  buf.write(f.creatorApp, 28, 4, 'latin1');
  buf.writeUInt32BE(0x0005_0003, 32); // creator version, as qemu writes it
  buf.write('Wi2k', 36, 'latin1');
  buf.writeBigUInt64BE(BigInt(f.currentSize), 40); // original size
  buf.writeBigUInt64BE(BigInt(f.currentSize), 48);
  buf.writeUInt16BE(f.geometry.cylinders, 56);
  buf[58] = f.geometry.heads;
  buf[59] = f.geometry.sectorsPerTrack;
  buf.writeUInt32BE(TYPE_CODES[f.type], 60);
  crypto.randomFillSync(buf, 68, 16);
  buf.writeUInt32BE(vhdChecksum(buf, 64), 64);
  return buf;
}
