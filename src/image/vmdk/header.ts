import { ImageFormatError } from '../errors.js';

/** VMDK counts everything in 512-byte sectors. */
export const SECTOR = 512;
/** `gdOffset` of a stream-optimized extent whose grain directory comes after the grains; the footer holds the real one. */
export const GD_AT_END = -1;
/** Bytes of one grain table or grain directory entry (a sector number). */
export const ENTRY_BYTES = 4;

export const FLAG_NEWLINE_TEST = 1 << 0;
export const FLAG_REDUNDANT_GRAIN_TABLE = 1 << 1;
export const FLAG_ZEROED_GRAIN = 1 << 2;
export const FLAG_COMPRESSED = 1 << 16;
export const FLAG_MARKERS = 1 << 17;

export const COMPRESSION_NONE = 0;
export const COMPRESSION_DEFLATE = 1;

/** "KDMV" as the file stores it. */
const MAGIC = 0x564d444b;
const ALL_ONES = 0xffffffffffffffffn;

/** The SparseExtentHeader of a hosted sparse extent, as "Virtual Disk Format 1.1" lays it out (offsets in sectors). */
export interface SparseHeader {
  version: number;
  flags: number;
  /** Sectors the guest sees. */
  capacity: number;
  /** Sectors per grain. */
  grainSize: number;
  descriptorOffset: number;
  descriptorSize: number;
  numGTEsPerGT: number;
  rgdOffset: number;
  /** A sector, or GD_AT_END. */
  gdOffset: number;
  /** Sectors of metadata before the first grain. */
  overHead: number;
  uncleanShutdown: boolean;
  /** The four newline-detection bytes read as written ("\n", " ", "\r", "\n"): false after a text-mode transfer. */
  newlinesIntact: boolean;
  compressAlgorithm: number;
}

export function isSparseMagic(buf: Buffer): boolean {
  return buf.length >= 4 && buf.readUInt32LE(0) === MAGIC;
}

/** The header in `buf` (512 bytes at `at` of `file`); throws naming the field that cannot be a number. */
export function parseHeader(buf: Buffer, file: string, at: number): SparseHeader {
  if (buf.length < SECTOR) throw new ImageFormatError(file, at, `the sparse extent header is cut short (${buf.length} of ${SECTOR} bytes)`);
  if (!isSparseMagic(buf)) throw new ImageFormatError(file, at, 'no KDMV magic: not a VMDK sparse extent header');
  const u64 = (offset: number, field: string, allowAllOnes = false): number => {
    const v = buf.readBigUInt64LE(offset);
    if (allowAllOnes && v === ALL_ONES) return GD_AT_END;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ImageFormatError(file, at + offset, `${field} ${v} is out of range`);
    return Number(v);
  };
  return {
    version: buf.readUInt32LE(4),
    flags: buf.readUInt32LE(8),
    capacity: u64(12, 'capacity'),
    grainSize: u64(20, 'grainSize'),
    descriptorOffset: u64(28, 'descriptorOffset'),
    descriptorSize: u64(36, 'descriptorSize'),
    numGTEsPerGT: buf.readUInt32LE(44),
    rgdOffset: u64(48, 'rgdOffset'),
    gdOffset: u64(56, 'gdOffset', true),
    overHead: u64(64, 'overHead'),
    uncleanShutdown: buf[72] !== 0,
    newlinesIntact: buf.toString('latin1', 73, 77) === '\n \r\n',
    compressAlgorithm: buf.readUInt16LE(77),
  };
}

/** One sector holding `h`. */
export function encodeHeader(h: SparseHeader): Buffer {
  const buf = Buffer.alloc(SECTOR);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(h.version, 4);
  buf.writeUInt32LE(h.flags, 8);
  buf.writeBigUInt64LE(BigInt(h.capacity), 12);
  buf.writeBigUInt64LE(BigInt(h.grainSize), 20);
  buf.writeBigUInt64LE(BigInt(h.descriptorOffset), 28);
  buf.writeBigUInt64LE(BigInt(h.descriptorSize), 36);
  buf.writeUInt32LE(h.numGTEsPerGT, 44);
  buf.writeBigUInt64LE(BigInt(h.rgdOffset), 48);
  buf.writeBigUInt64LE(h.gdOffset === GD_AT_END ? ALL_ONES : BigInt(h.gdOffset), 56);
  buf.writeBigUInt64LE(BigInt(h.overHead), 64);
  buf[72] = h.uncleanShutdown ? 1 : 0;
  buf.write('\n \r\n', 73, 'latin1');
  buf.writeUInt16LE(h.compressAlgorithm, 77);
  return buf;
}
