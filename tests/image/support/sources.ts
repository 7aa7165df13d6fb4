import fs from 'node:fs';
import { Readable } from 'node:stream';
import { streamSource, type ByteSource } from '../../../src/image/byte-source.js';

/** An image held in memory, read at offsets as a file is. */
export function bufferSource(bytes: Buffer, name = 'image'): ByteSource {
  return {
    name,
    size: bytes.length,
    seekable: true,
    read: async (offset, length) => Buffer.from(bytes.subarray(Math.min(offset, bytes.length), Math.min(offset + length, bytes.length))),
    close: async () => undefined,
  };
}

/** A buffer handed out as a stream in chunks of `chunk` bytes, its length told (a tar member) or not (a pipe). */
export function bufferStream(bytes: Buffer, chunk = 65536, name = 'stream', size: number | null = bytes.length): ByteSource {
  const parts: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += chunk) parts.push(bytes.subarray(at, at + chunk));
  return streamSource(Readable.from(parts, { objectMode: true }), name, size);
}

/** A file read once, front to back; the odd default chunk size puts chunk edges anywhere. */
export function fileStream(file: string, options: { chunk?: number; name?: string; sized?: boolean } = {}): ByteSource {
  const { chunk = 37 * 1024, name = file, sized = true } = options;
  return streamSource(fs.createReadStream(file, { highWaterMark: chunk }), name, sized ? fs.statSync(file).size : null);
}
