import { expect } from 'vitest';
import type { ByteSource } from '../../../src/image/byte-source.js';
import { ImageFormatError, UnsupportedImageError } from '../../../src/image/errors.js';
import type { ImageReader } from '../../../src/image/image-reader.js';

/** What a decode reported: the bytes the image reads as, and which ranges came as data or as zero, in the order reported. */
export interface Decoded {
  bytes: Buffer;
  data: [number, number][];
  zero: [number, number][];
  dataBytes: number;
  zeroBytes: number;
}

const SECTOR = 512;

/**
 * Decodes a whole image into memory over `under` (zeroes, or a backing
 * image's bytes), checking the reader's contract on the way: every range
 * inside the disk, non-empty, on a sector boundary, none reported twice.
 * The disk's buffer is made only once the decode is done: a hostile header
 * may claim a disk far larger than memory, and must be refused first.
 */
export async function decodeAll(reader: ImageReader, under?: Buffer): Promise<Decoded> {
  const size = reader.virtualSize;
  const pieces: { offset: number; length: number; buf: Buffer | null }[] = [];
  const claim = (offset: number, length: number, buf: Buffer | null): void => {
    if (offset < 0 || length <= 0 || offset + length > size) throw new Error(`range ${offset}+${length} outside ${size}`);
    if (offset % SECTOR !== 0) throw new Error(`reported an unaligned offset ${offset}`);
    pieces.push({ offset, length, buf });
  };
  await reader.decode({
    data: async (offset, buf) => claim(offset, buf.length, buf),
    zero: async (offset, length) => claim(offset, length, null),
  });
  const sorted = [...pieces].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const [a, b] = [sorted[i - 1]!, sorted[i]!];
    if (b.offset < a.offset + a.length) throw new Error(`range ${b.offset}+${b.length} reported twice (it overlaps ${a.offset}+${a.length})`);
  }
  const got: Decoded = { bytes: Buffer.alloc(size), data: [], zero: [], dataBytes: 0, zeroBytes: 0 };
  under?.copy(got.bytes, 0, 0, Math.min(under.length, size));
  for (const p of pieces) {
    if (p.buf) {
      p.buf.copy(got.bytes, p.offset);
      got.data.push([p.offset, p.length]);
      got.dataBytes += p.length;
    } else {
      got.bytes.fill(0, p.offset, p.offset + p.length);
      got.zero.push([p.offset, p.length]);
      got.zeroBytes += p.length;
    }
  }
  return got;
}

/** Opens `source` with `open`, decodes it as decodeAll does, and closes it whatever happens. */
export async function decodeSource(source: ByteSource, open: (source: ByteSource) => Promise<ImageReader>, under?: Buffer): Promise<Decoded & { reader: ImageReader }> {
  try {
    const reader = await open(source);
    return { ...(await decodeAll(reader, under)), reader };
  } finally {
    await source.close();
  }
}

/** Decodes an image that must be refused; the error, which must name damage or something unsupported. */
export async function refusal(open: () => Promise<ImageReader>): Promise<Error> {
  try {
    await decodeAll(await open());
  } catch (err) {
    expect(err instanceof ImageFormatError || err instanceof UnsupportedImageError, String(err)).toBe(true);
    return err as Error;
  }
  throw new Error('the image was accepted');
}
