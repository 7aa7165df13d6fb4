import { UnsupportedImageError } from '../errors.js';
import type { ByteSink, ImageContent, WriteOptions } from '../image-writer.js';
import { RAW_CHUNK } from '../raw.js';

/** A byte range of the disk, [start, end). */
export interface Span {
  start: number;
  end: number;
}

/** The subformat asked for, dynamic when none; one the writer does not write is refused by name. */
export function subformatOf(sink: ByteSink, format: string, opts: WriteOptions): 'dynamic' | 'fixed' {
  const subformat = opts.subformat ?? 'dynamic';
  if (subformat !== 'dynamic' && subformat !== 'fixed') throw new UnsupportedImageError(sink.name, `the ${format} subformat "${subformat}" (dynamic and fixed are written)`);
  return subformat;
}

/**
 * The content's data runs cut at block boundaries and widened to whole
 * sectors, by block index in increasing order; and the blocks that hold
 * zero runs but no data.
 */
export async function blockSpans(content: ImageContent, blockSize: number): Promise<{ data: Map<number, Span[]>; zero: Set<number> }> {
  const data = new Map<number, Span[]>();
  const zero = new Set<number>();
  for await (const run of content.runs()) {
    if (run.kind === 'hole') continue;
    let start = Math.floor(run.offset / 512) * 512;
    const end = Math.min(content.size, Math.ceil((run.offset + run.length) / 512) * 512);
    while (start < end) {
      const block = Math.floor(start / blockSize);
      const stop = Math.min(end, (block + 1) * blockSize);
      if (run.kind === 'zero') zero.add(block);
      else {
        const spans = data.get(block) ?? [];
        const last = spans[spans.length - 1];
        if (last && last.end >= start) last.end = Math.max(last.end, stop);
        else spans.push({ start, end: stop });
        data.set(block, spans);
      }
      start = stop;
    }
  }
  for (const block of data.keys()) zero.delete(block);
  return { data, zero };
}

/** Copies `spans` of the content to the sink, the byte at disk offset `start` going to `file`; the bytes copied. */
export async function copySpans(content: ImageContent, sink: ByteSink, spans: Span[], start: number, file: number, opts: WriteOptions): Promise<number> {
  let copied = 0;
  for (const s of spans) {
    for (let pos = s.start; pos < s.end; pos += RAW_CHUNK) {
      if (opts.signal?.aborted) throw new Error('interrupted');
      const buf = Buffer.allocUnsafe(Math.min(RAW_CHUNK, s.end - pos));
      await content.read(buf, pos);
      await sink.write(buf, file + (pos - start));
      copied += buf.length;
      opts.progress?.(pos + buf.length);
    }
  }
  return copied;
}
