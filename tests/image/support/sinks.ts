import type { ByteSink } from '../../../src/image/image-writer.js';

/** A ByteSink into memory: seekable like a file, or front to back like a pipe (gaps written as zeroes). */
export function memoryByteSink(name = 'memory', seekable = true): ByteSink & { bytes: () => Buffer } {
  let buf = Buffer.alloc(0);
  let size = 0;
  let position = 0;
  const ensure = (end: number): void => {
    if (end <= buf.length) return;
    const next = Buffer.alloc(Math.max(end, buf.length * 2));
    buf.copy(next);
    buf = next;
  };
  return {
    name,
    seekable,
    write: async (data, offset) => {
      if (!seekable && offset < position) throw new Error(`${name}: a stream cannot go back to ${offset} from ${position}`);
      ensure(offset + data.length);
      data.copy(buf, offset);
      position = offset + data.length;
      size = Math.max(size, position);
    },
    finish: async (end) => {
      ensure(end);
      buf.fill(0, end);
      size = end;
    },
    bytes: () => buf.subarray(0, size),
  };
}
