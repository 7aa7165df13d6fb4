import { UnsupportedImageError } from '../errors.js';
import type { ByteSink, ImageContent, WriteOptions, WriteResult } from '../image-writer.js';
import { blockSpans, copySpans, subformatOf } from '../vhd/block-spans.js';
import { batLayout } from './bat.js';
import { MIB } from './header-section.js';
import { encodeHeaderSection, encodeMetadata, writtenLayout } from './layout.js';

/** Block size of the VHDXs Strata writes: small enough to keep sparse volumes sparse, a whole MiB as the format wants. */
export const BLOCK_SIZE = 2 * MIB;
const LOGICAL_SECTOR = 512;
const STATE_ZERO = 2;
const STATE_FULLY_PRESENT = 6;
/** 64 TiB, the format's limit. */
const MAX_SIZE = 64 * 1024 * 1024 * MIB;

/**
 * A VHDX, front to back: the header section, the (empty) log, the
 * metadata, the BAT, then the payload blocks. Dynamic: one block for each
 * 2 MiB that holds data; a block with only zero runs is marked zero, the
 * others are left absent (they read zeroes, as there is no parent). Fixed:
 * every block present, in order (on a file, what holds no data stays a hole).
 */
export async function writeVhdx(content: ImageContent, sink: ByteSink, opts: WriteOptions): Promise<WriteResult> {
  const subformat = subformatOf(sink, 'VHDX', opts);
  const size = content.size;
  if (size === 0 || size % LOGICAL_SECTOR !== 0 || size > MAX_SIZE) throw new UnsupportedImageError(sink.name, `a VHDX of ${size} bytes (whole 512-byte sectors, 64 TiB at most)`);
  const metadata = { blockSize: BLOCK_SIZE, virtualSize: size, logicalSectorSize: LOGICAL_SECTOR, physicalSectorSize: 4096, fixed: subformat === 'fixed' };
  const bat = batLayout(metadata);
  const layout = writtenLayout(bat.entries);
  const { data, zero } = await blockSpans(content, BLOCK_SIZE);
  const table = Buffer.alloc(bat.entries * 8);
  let next = layout.dataStart;
  const placed: { block: number; file: number }[] = [];
  for (let block = 0; block < bat.payloadBlocks; block++) {
    const at = 8 * (block + Math.floor(block / bat.chunkRatio));
    if (data.has(block) || subformat === 'fixed') {
      placed.push({ block, file: next });
      table.writeBigUInt64LE(BigInt(next) | BigInt(STATE_FULLY_PRESENT), at);
      next += BLOCK_SIZE;
    } else if (zero.has(block)) table.writeBigUInt64LE(BigInt(STATE_ZERO), at);
  }
  await sink.write(encodeHeaderSection(layout), 0);
  await sink.write(encodeMetadata(metadata), layout.metadata.offset);
  await sink.write(table, layout.bat.offset);
  let dataBytes = 0;
  for (const { block, file } of placed) dataBytes += await copySpans(content, sink, data.get(block) ?? [], block * BLOCK_SIZE, file, opts);
  await sink.finish(next);
  opts.progress?.(size);
  return { fileSize: next, dataBytes };
}
