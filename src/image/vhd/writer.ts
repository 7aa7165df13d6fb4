import { UnsupportedImageError } from '../errors.js';
import type { ByteSink, ImageContent, WriteOptions, WriteResult } from '../image-writer.js';
import { writeRaw } from '../raw.js';
import { blockSpans, copySpans, subformatOf } from './block-spans.js';
import { bitmapBytes, encodeDynamicHeader, HEADER_SIZE } from './dynamic-header.js';
import { encodeFooter, FOOTER_SIZE, type Footer } from './footer.js';
import { geometryToWrite, MAX_SECTORS } from './geometry.js';
import { markSectors } from './sector-bitmap.js';

/** Block size of the dynamic disks Strata writes: the specification's default, what Hyper-V and qemu use. */
export const BLOCK_SIZE = 2 * 1024 * 1024;

/** A VHD, dynamic (the default) or fixed, sized so that qemu-img, Hyper-V and the rest see exactly `content.size` bytes. */
export async function writeVhd(content: ImageContent, sink: ByteSink, opts: WriteOptions): Promise<WriteResult> {
  const subformat = subformatOf(sink, 'VHD', opts);
  const size = content.size;
  if (size % 512 !== 0) throw new UnsupportedImageError(sink.name, `a VHD of ${size} bytes (a VHD holds whole 512-byte sectors)`);
  if (size / 512 > MAX_SECTORS) throw new UnsupportedImageError(sink.name, `a VHD of ${size} bytes (the format holds 2040 GiB at most)`);
  const { creatorApp, geometry } = geometryToWrite(size / 512);
  const footer = (type: Footer['type'], dataOffset: number | null): Buffer => encodeFooter({ type, dataOffset, creatorApp, currentSize: size, geometry });
  if (subformat === 'fixed') {
    const trailer = footer('fixed', null);
    const withFooter: ByteSink = {
      name: sink.name,
      seekable: sink.seekable,
      write: (buf, offset) => sink.write(buf, offset),
      finish: async (n) => {
        await sink.write(trailer, n);
        await sink.finish(n + FOOTER_SIZE);
      },
    };
    const r = await writeRaw(content, withFooter, opts);
    return { fileSize: size + FOOTER_SIZE, dataBytes: r.dataBytes };
  }
  return writeDynamic(content, sink, opts, footer('dynamic', FOOTER_SIZE));
}

/**
 * Front to back: footer copy, header, BAT, the blocks that hold data (each
 * its bitmap then its data; the sectors marked are those the data covers),
 * the footer. The runs are walked once first to lay the BAT out.
 */
async function writeDynamic(content: ImageContent, sink: ByteSink, opts: WriteOptions, footer: Buffer): Promise<WriteResult> {
  const entries = Math.ceil(content.size / BLOCK_SIZE);
  const tableOffset = FOOTER_SIZE + HEADER_SIZE;
  const batBytes = Math.ceil((entries * 4) / 512) * 512;
  const bitmapSize = bitmapBytes(BLOCK_SIZE);
  const blocks = (await blockSpans(content, BLOCK_SIZE)).data;
  const bat = Buffer.alloc(batBytes, 0xff);
  let next = tableOffset + batBytes;
  const placed = [...blocks.keys()].map((index) => {
    bat.writeUInt32BE(next / 512, index * 4);
    const file = next;
    next += bitmapSize + BLOCK_SIZE;
    return { index, file };
  });
  await sink.write(Buffer.concat([footer, encodeDynamicHeader({ tableOffset, maxTableEntries: entries, blockSize: BLOCK_SIZE }), bat]), 0);
  let dataBytes = 0;
  for (const { index, file } of placed) {
    const spans = blocks.get(index)!;
    const base = index * BLOCK_SIZE;
    const bitmap = Buffer.alloc(bitmapSize);
    for (const s of spans) markSectors(bitmap, (s.start - base) / 512, (s.end - base) / 512);
    await sink.write(bitmap, file);
    dataBytes += await copySpans(content, sink, spans, base, file + bitmapSize, opts);
  }
  await sink.write(footer, next);
  await sink.finish(next + FOOTER_SIZE);
  opts.progress?.(content.size);
  return { fileSize: next + FOOTER_SIZE, dataBytes };
}
