import type { ByteSource } from '../byte-source.js';

export interface Reads {
  read(at: number, length: number): Promise<Buffer>;
}

/**
 * Reads of a forward-only source that may go back a little. qemu packs
 * compressed clusters byte by byte into a host cluster it keeps filling
 * while it allocates L2 tables after it, and their stated sizes round up
 * to a sector: so a read may start before where the last one ended. The
 * last `keep` bytes the stream passed are held (gaps up to `keep` are read
 * rather than skipped, which costs a stream nothing) and reads there are
 * served from them. A file is read where asked. `start`: where the stream
 * stands when the reads begin.
 */
export function cachedReads(source: ByteSource, keep: number, start: number): Reads {
  if (source.seekable) return { read: (at, length) => source.read(at, length) };
  let segments: { at: number; buf: Buffer }[] = [];
  /** What the stream has delivered so far ends here; the held bytes are contiguous and end here too. */
  let end = start;
  const heldFrom = (): number => segments[0]?.at ?? end;
  return {
    read: async (at, length) => {
      if (at + length > end) {
        const from = at > end + keep ? at : end;
        if (from > end) segments = [];
        const got = await source.read(from, at + length - from);
        if (got.length > 0) segments.push({ at: from, buf: got });
        end = from + got.length;
        while (segments.length > 1 && segments[1]!.at <= end - keep && segments[1]!.at <= at) segments.shift();
      }
      // Before what is held: the source says it cannot go back.
      if (at < heldFrom()) return source.read(at, length);
      const stop = Math.min(at + length, end);
      const parts: Buffer[] = [];
      for (const s of segments) {
        const lo = Math.max(at, s.at);
        const hi = Math.min(stop, s.at + s.buf.length);
        if (lo < hi) parts.push(s.buf.subarray(lo - s.at, hi - s.at));
      }
      return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    },
  };
}
