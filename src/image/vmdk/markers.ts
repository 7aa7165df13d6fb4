import { SECTOR } from './header.js';

/**
 * The markers of a stream-optimized extent. Every one starts on a sector: a
 * grain marker is the grain's LBA and the size of the compressed bytes that
 * follow it; a metadata marker (size 0) says what the sectors after it hold
 * and how many there are; end-of-stream is a sector of zeroes.
 */
export const MARKER_EOS = 0;
export const MARKER_GT = 1;
export const MARKER_GD = 2;
export const MARKER_FOOTER = 3;

/** Bytes of a grain marker before its compressed data. */
export const GRAIN_MARKER_BYTES = 12;

export type Marker = { kind: 'grain'; lba: number; size: number } | { kind: 'metadata'; type: number; sectors: number };

/** The marker at the start of `sector` (at least 16 bytes); null for an LBA past 2^53 sectors, which no disk has. */
export function parseMarker(sector: Buffer): Marker | null {
  const val = sector.readBigUInt64LE(0);
  if (val > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  const size = sector.readUInt32LE(8);
  if (size !== 0) return { kind: 'grain', lba: Number(val), size };
  return { kind: 'metadata', type: sector.readUInt32LE(12), sectors: Number(val) };
}

/** A metadata marker sector announcing `sectors` sectors of `type`. */
export function metadataMarker(type: number, sectors: number): Buffer {
  const buf = Buffer.alloc(SECTOR);
  buf.writeBigUInt64LE(BigInt(sectors), 0);
  buf.writeUInt32LE(type, 12);
  return buf;
}

/** A grain marker and its compressed bytes, zero-padded to a whole sector. */
export function grainRecord(lba: number, compressed: Buffer): Buffer {
  const buf = Buffer.alloc(Math.ceil((GRAIN_MARKER_BYTES + compressed.length) / SECTOR) * SECTOR);
  buf.writeBigUInt64LE(BigInt(lba), 0);
  buf.writeUInt32LE(compressed.length, 8);
  compressed.copy(buf, GRAIN_MARKER_BYTES);
  return buf;
}
