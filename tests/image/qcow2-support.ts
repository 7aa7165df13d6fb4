import fs from 'node:fs';
import { Readable } from 'node:stream';
import { fileSource, streamSource, type ByteSource } from '../../src/image/byte-source.js';
import type { ImageReader } from '../../src/image/image-reader.js';
import type { ByteSink, ContentRun, ImageContent } from '../../src/image/image-writer.js';
import { openQcow2 } from '../../src/image/qcow2/reader.js';

/** What a reader reported: the bytes of its own layer over `under` (zeroes, or a backing image's bytes), and where it reported. */
export interface Decoded {
  reader: ImageReader;
  bytes: Buffer;
  data: number;
  zero: number;
}

/** A forward-only source over a file, handed out in odd chunk sizes so chunk edges fall anywhere. */
export function forwardOnly(file: string): ByteSource {
  return streamSource(fs.createReadStream(file, { highWaterMark: 37 * 1024 }) as Readable, `${file} (stream)`);
}

/** Decodes `source` into memory, checking that no byte is reported twice and none beyond the virtual size. */
export async function decodeAll(source: ByteSource, under?: Buffer): Promise<Decoded> {
  try {
    const reader = await openQcow2(source);
    const bytes = Buffer.alloc(reader.virtualSize);
    under?.copy(bytes, 0, 0, Math.min(under.length, bytes.length));
    const seen = new Uint8Array(Math.ceil(reader.virtualSize / 512));
    const mark = (offset: number, length: number): void => {
      if (offset < 0 || offset + length > reader.virtualSize) throw new Error(`reported ${length} bytes at ${offset}, past the virtual size`);
      if (offset % 512 !== 0) throw new Error(`reported an unaligned offset ${offset}`);
      for (let s = offset / 512; s < Math.ceil((offset + length) / 512); s++) {
        if (seen[s]) throw new Error(`reported sector ${s} twice`);
        seen[s] = 1;
      }
    };
    let data = 0;
    let zero = 0;
    await reader.decode({
      data: async (offset, buf) => {
        mark(offset, buf.length);
        buf.copy(bytes, offset);
        data += buf.length;
      },
      zero: async (offset, length) => {
        mark(offset, length);
        bytes.fill(0, offset, offset + length);
        zero += length;
      },
    });
    return { reader, bytes, data, zero };
  } finally {
    await source.close();
  }
}

export const decodeFile = (file: string, under?: Buffer): Promise<Decoded> => decodeAll(fileSource(file), under);

/** A deterministic generator (mulberry32), so a failing layout can be made again. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Bytes that deflate well but not to nothing: short words from a small alphabet. */
export function compressible(length: number, rand: () => number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = rand() < 0.1 ? 32 : 97 + Math.floor(rand() * 6);
  return out;
}

/** `data` as what a writer writes, with the runs given (data wherever none is said). */
export function bufferContent(data: Buffer, runs: ContentRun[]): ImageContent {
  return {
    size: data.length,
    runs: async function* () {
      yield* runs;
    },
    read: async (buf, offset) => {
      data.copy(buf, 0, offset, offset + buf.length);
    },
  };
}

/** A seekable sink into memory. */
export function memorySink(): ByteSink & { bytes(): Buffer } {
  let bytes = Buffer.alloc(0);
  return {
    name: 'memory',
    seekable: true,
    write: async (buf, offset) => {
      if (offset + buf.length > bytes.length) bytes = Buffer.concat([bytes, Buffer.alloc(offset + buf.length - bytes.length)]);
      buf.copy(bytes, offset);
    },
    finish: async (size) => {
      bytes = size <= bytes.length ? bytes.subarray(0, size) : Buffer.concat([bytes, Buffer.alloc(size - bytes.length)]);
    },
    bytes: () => bytes,
  };
}
