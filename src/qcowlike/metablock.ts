import { metaChecksum } from './checksum.js';

/**
 * Every metadata block is one cluster whose last 16 bytes are a trailer:
 * u32 type, u32 owner (layer id or bitmap index), u64 xxh64 of everything
 * before the hash. The type and owner catch a block written to, or read
 * from, the wrong place; the hash catches everything else.
 */
export const TRAILER = 16;

export enum BlockType {
  Root = 0x544f4f52, // 'ROOT'
  Bitmap = 0x50414d42, // 'BMAP'
  L1 = 0x2020314c, // 'L1  '
  L2 = 0x2020324c, // 'L2  '
}

export function sealBlock(block: Buffer, type: BlockType, owner: number): void {
  const t = block.length - TRAILER;
  block.writeUInt32LE(type, t);
  block.writeUInt32LE(owner >>> 0, t + 4);
  block.writeBigUInt64LE(metaChecksum(block.subarray(0, t + 8)), t + 8);
}

/** Returns null when the block is sound, else what is wrong with it. */
export function verifyBlock(block: Buffer, type: BlockType, owner: number | undefined): string | null {
  const t = block.length - TRAILER;
  if (block.readBigUInt64LE(t + 8) !== metaChecksum(block.subarray(0, t + 8))) return 'checksum mismatch';
  if (block.readUInt32LE(t) !== type) return `wrong block type 0x${block.readUInt32LE(t).toString(16)} (expected 0x${type.toString(16)})`;
  if (owner !== undefined && block.readUInt32LE(t + 4) !== owner >>> 0) return `wrong owner ${block.readUInt32LE(t + 4)} (expected ${owner})`;
  return null;
}

export function blockTypeName(type: BlockType): string {
  return { [BlockType.Root]: 'root block', [BlockType.Bitmap]: 'allocation bitmap block', [BlockType.L1]: 'L1 table block', [BlockType.L2]: 'L2 table block' }[type];
}
