import type { ByteSource } from '../byte-source.js';
import { ImageFormatError } from '../errors.js';
import type { ImageReader, ImageSink } from '../image-reader.js';
import { RAW_CHUNK } from '../raw.js';
import { FOOTER_SIZE, parseFooter, type Footer } from './footer.js';
import { MAX_SECTORS, sizeNotes, visibleSectors } from './geometry.js';
import { readExactly } from './ordered-reads.js';

/**
 * A fixed disk: raw data, then the footer. From a file the footer is read
 * first; from a stream (whose first sector `head` was read to tell the
 * subformat) the data comes first and the footer, read last, must agree
 * with the size assumed.
 */
export async function openFixedVhd(source: ByteSource, head: Buffer): Promise<ImageReader> {
  const size = source.size;
  if (size === null) throw new ImageFormatError(source.name, null, 'a fixed VHD read from a stream needs its size given');
  if (size < FOOTER_SIZE) throw new ImageFormatError(source.name, 0, `${size} bytes are too few for a VHD footer`);
  const dataBytes = size - FOOTER_SIZE;
  /** Bytes at `pos`, the first ones from `head` (a stream cannot give them again). */
  const bytesAt = async (pos: number, n: number, what: string): Promise<Buffer> => {
    if (source.seekable || pos >= head.length) return readExactly(source, pos, n, what);
    const fromHead = head.subarray(pos, Math.min(head.length, pos + n));
    if (fromHead.length === n) return Buffer.from(fromHead);
    return Buffer.concat([fromHead, await readExactly(source, head.length, n - fromHead.length, what)]);
  };
  const footerAt = async (): Promise<Footer> => {
    const f = parseFooter(await bytesAt(dataBytes, FOOTER_SIZE, 'the footer'));
    if (typeof f === 'string') throw new ImageFormatError(source.name, dataBytes, f);
    if (f.type !== 'fixed') throw new ImageFormatError(source.name, dataBytes, `the footer says a ${f.type} disk, but the file has no footer copy at its start`);
    return f;
  };
  const sizeOf = (f: Footer): number => {
    const sectors = visibleSectors(f.creatorApp, f.geometry, f.currentSize);
    if (sectors > MAX_SECTORS) throw new ImageFormatError(source.name, dataBytes, `a size of ${sectors * 512} bytes, more than the 2040 GiB a VHD holds`);
    return sectors * 512;
  };
  const notes: string[] = [];
  let virtualSize = dataBytes;
  if (source.seekable) {
    const footer = await footerAt();
    virtualSize = sizeOf(footer);
    if (virtualSize > dataBytes) throw new ImageFormatError(source.name, dataBytes, `the footer gives ${virtualSize} bytes, but the file holds ${dataBytes} bytes of data`);
    notes.push(...sizeNotes(footer.creatorApp, virtualSize, footer.currentSize));
    if (virtualSize < dataBytes) notes.push(`${dataBytes - virtualSize} bytes of data past that size are left out, as qemu-img leaves them`);
  }
  return {
    format: 'vhd',
    subformat: 'fixed',
    virtualSize,
    backing: null,
    notes,
    decode: async (sink: ImageSink, signal?: AbortSignal) => {
      for (let pos = 0; pos < virtualSize; pos += RAW_CHUNK) {
        if (signal?.aborted) throw new Error('interrupted');
        await sink.data(pos, await bytesAt(pos, Math.min(RAW_CHUNK, virtualSize - pos), 'the data'));
      }
      if (source.seekable) return;
      const stated = sizeOf(await footerAt());
      if (stated !== virtualSize) throw new ImageFormatError(source.name, dataBytes, `the footer gives ${stated} bytes, not the ${virtualSize} bytes of data before it (read the image from a file)`);
    },
  };
}
