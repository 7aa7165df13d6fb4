import { vhdChecksum } from './footer.js';

/** Bytes of the dynamic disk header. */
export const HEADER_SIZE = 1024;
/** A BAT entry of a block that is not allocated. */
export const UNALLOCATED = 0xffff_ffff;

/** Where a differencing disk says its parent is, in one of several encodings. */
export interface ParentLocator {
  /** Platform code: W2ru (relative, UTF-16LE), W2ku (absolute, UTF-16LE), Wi2r/Wi2k (ASCII), MacX (file URL, UTF-8). */
  platform: string;
  length: number;
  offset: number;
}

export interface DynamicHeader {
  tableOffset: number;
  maxTableEntries: number;
  blockSize: number;
  /** The parent's file name (UTF-16BE in the header), empty when none. */
  parentName: string;
  locators: ParentLocator[];
}

export function parseDynamicHeader(buf: Buffer): DynamicHeader | string {
  if (buf.length < HEADER_SIZE || buf.toString('latin1', 0, 8) !== 'cxsparse') return 'no dynamic disk header ("cxsparse")';
  if (vhdChecksum(buf.subarray(0, HEADER_SIZE), 36) !== buf.readUInt32BE(36)) return 'the dynamic header checksum does not match';
  const tableOffset = buf.readBigUInt64BE(16);
  if (tableOffset > BigInt(Number.MAX_SAFE_INTEGER)) return `a BAT offset of ${tableOffset}`;
  const blockSize = buf.readUInt32BE(32);
  if (blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) return `a block size of ${blockSize} bytes (not a power of two of at least 512)`;
  const locators: ParentLocator[] = [];
  for (let i = 0; i < 8; i++) {
    const at = 576 + 24 * i;
    const code = buf.readUInt32BE(at);
    const length = buf.readUInt32BE(at + 8);
    if (code === 0 || length === 0) continue;
    const offset = buf.readBigUInt64BE(at + 16);
    if (offset > BigInt(Number.MAX_SAFE_INTEGER)) return `a parent locator offset of ${offset}`;
    locators.push({ platform: buf.toString('latin1', at, at + 4), length, offset: Number(offset) });
  }
  return {
    tableOffset: Number(tableOffset),
    maxTableEntries: buf.readUInt32BE(28),
    blockSize,
    parentName: utf16be(buf.subarray(64, 576)),
    locators,
  };
}

function utf16be(raw: Buffer): string {
  const swapped = Buffer.from(raw).swap16();
  const text = swapped.toString('utf16le');
  const end = text.indexOf('\0');
  return end < 0 ? text : text.slice(0, end);
}

export function encodeDynamicHeader(h: { tableOffset: number; maxTableEntries: number; blockSize: number }): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE);
  buf.write('cxsparse', 0, 'latin1');
  buf.writeBigUInt64BE(0xffff_ffff_ffff_ffffn, 8);
  buf.writeBigUInt64BE(BigInt(h.tableOffset), 16);
  buf.writeUInt32BE(0x0001_0000, 24);
  buf.writeUInt32BE(h.maxTableEntries, 28);
  buf.writeUInt32BE(h.blockSize, 32);
  buf.writeUInt32BE(vhdChecksum(buf, 36), 36);
  return buf;
}

/** Bytes of a block's sector bitmap: one bit a sector, padded to whole sectors. */
export const bitmapBytes = (blockSize: number): number => Math.ceil(blockSize / 512 / 8 / 512) * 512;
