import type { ByteSource } from './byte-source.js';
import { ImageFormatError } from './errors.js';
import type { ImageReader, ImageSink } from './image-reader.js';
import type { ByteSink, ImageContent, WriteOptions, WriteResult } from './image-writer.js';

/** Raw images move in pieces this large: few calls, bounded memory. */
export const RAW_CHUNK = 4 * 1024 * 1024;

/** A raw image: every byte is data (the sink finds the zero runs); its size must be known. */
export async function openRaw(source: ByteSource): Promise<ImageReader> {
  const size = source.size;
  if (size === null) throw new ImageFormatError(source.name, null, 'a raw image read from a stream needs its size given');
  return {
    format: 'raw',
    subformat: null,
    virtualSize: size,
    backing: null,
    notes: [],
    decode: async (sink: ImageSink, signal?: AbortSignal) => {
      for (let pos = 0; pos < size; pos += RAW_CHUNK) {
        if (signal?.aborted) throw new Error('interrupted');
        const want = Math.min(RAW_CHUNK, size - pos);
        const buf = await source.read(pos, want);
        if (buf.length < want) throw new ImageFormatError(source.name, pos + buf.length, `ends before its ${size} bytes`);
        await sink.data(pos, buf);
      }
    },
  };
}

/** A sparse raw image: data runs written, zero runs and holes left as holes (zeroes on a stream). */
export async function writeRaw(content: ImageContent, sink: ByteSink, opts: WriteOptions): Promise<WriteResult> {
  let dataBytes = 0;
  for await (const run of content.runs()) {
    if (run.kind !== 'data') {
      opts.progress?.(run.offset + run.length);
      continue;
    }
    for (let pos = run.offset; pos < run.offset + run.length; pos += RAW_CHUNK) {
      if (opts.signal?.aborted) throw new Error('interrupted');
      const buf = Buffer.allocUnsafe(Math.min(RAW_CHUNK, run.offset + run.length - pos));
      await content.read(buf, pos);
      await sink.write(buf, pos);
      dataBytes += buf.length;
      opts.progress?.(pos + buf.length);
    }
  }
  await sink.finish(content.size);
  return { fileSize: content.size, dataBytes };
}
