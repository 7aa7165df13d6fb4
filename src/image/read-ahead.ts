import type { ByteSource } from './byte-source.js';

/**
 * A file read in windows of `span` bytes: a reader that walks it front to
 * back in small pieces (a VMDK grain's marker, then its compressed bytes; the
 * next grain's marker) costs one read call per window instead of two per
 * piece, each a trip through libuv's pool. A piece the window does not hold
 * starts a new window there; a piece of `span` or more is read on its own.
 * Pieces handed out are views of a window that is never reused, so a sink
 * may keep them. A stream is returned as it is: it holds its chunks already.
 */
export function readAhead(source: ByteSource, span: number): ByteSource {
  if (!source.seekable) return source;
  let start = 0;
  let window: Buffer = Buffer.alloc(0);
  return {
    name: source.name,
    size: source.size,
    seekable: true,
    read: async (offset, length) => {
      if (offset >= start && offset + length <= start + window.length) return window.subarray(offset - start, offset - start + length);
      if (length >= span) return source.read(offset, length);
      const buf = await source.read(offset, span);
      start = offset;
      window = buf;
      return buf.subarray(0, Math.min(length, buf.length));
    },
    close: () => source.close(),
  };
}
