import { runsOf } from '../../host/image-copy.js';
import type { ImageContent } from '../image-writer.js';

/** One grain of content that holds data: `buf` is the whole grain, zero-padded past the content's end. */
export interface DataGrain {
  grain: number;
  buf: Buffer;
}

/** Content is read this much at a time, in whole grains. */
const READ_BYTES = 4 * 1024 * 1024;

const isZero = (buf: Buffer): boolean => {
  const first = runsOf(buf).next();
  return first.done === true || (first.value.zero && first.value.length === buf.length);
};

/**
 * The grains of `content` that hold data, in increasing order: every grain a
 * data run touches, read whole (a grain that a run enters half way reads the
 * rest as what the content has there), and left out when it reads as zeroes,
 * since an unallocated grain of an image with no parent reads zeroes too.
 * The next read is started before the grains of the last one are handed out.
 */
export async function* dataGrains(content: ImageContent, grainBytes: number, progress?: (done: number) => void, signal?: AbortSignal): AsyncGenerator<DataGrain> {
  const perRead = Math.max(1, Math.floor(READ_BYTES / grainBytes));
  const read = async (grain: number, count: number): Promise<Buffer> => {
    const buf = Buffer.alloc(count * grainBytes);
    const length = Math.min(buf.length, content.size - grain * grainBytes);
    await content.read(buf.subarray(0, length), grain * grainBytes);
    return buf;
  };
  async function* span(start: number, end: number): AsyncGenerator<DataGrain> {
    let next: Promise<Buffer> | null = read(start, Math.min(perRead, end - start));
    for (let g = start; g < end; g += perRead) {
      if (signal?.aborted) throw new Error('interrupted');
      const count = Math.min(perRead, end - g);
      const buf: Buffer = await next!;
      next = g + count < end ? read(g + count, Math.min(perRead, end - g - count)) : null;
      for (let i = 0; i < count; i++) {
        const grain = buf.subarray(i * grainBytes, (i + 1) * grainBytes);
        if (!isZero(grain)) yield { grain: g + i, buf: grain };
      }
      progress?.(Math.min(content.size, (g + count) * grainBytes));
    }
  }
  let pending: { start: number; end: number } | null = null;
  for await (const run of content.runs()) {
    const runEnd = run.offset + run.length;
    if (run.kind !== 'data' || run.length === 0) {
      // A gap that ends inside the pending span's last grain may be followed by data of that grain.
      if (pending && runEnd < pending.end * grainBytes) continue;
      if (pending) yield* span(pending.start, pending.end);
      pending = null;
      progress?.(runEnd);
      continue;
    }
    const start = Math.floor(run.offset / grainBytes);
    const end = Math.ceil(runEnd / grainBytes);
    if (pending && start <= pending.end) pending.end = Math.max(pending.end, end);
    else {
      if (pending) yield* span(pending.start, pending.end);
      pending = { start, end };
    }
  }
  if (pending) yield* span(pending.start, pending.end);
}
