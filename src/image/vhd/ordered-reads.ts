import type { ByteSource } from '../byte-source.js';
import { ImageFormatError } from '../errors.js';

/** A stretch of the file to read, with what it is for. */
export interface Extent<T> {
  file: number;
  length: number;
  tag: T;
}

/** Bytes read at once at most; adjacent extents are joined up to it, longer ones split. */
export const MAX_READ = 8 * 1024 * 1024;

/**
 * Reads `extents` in increasing file offset, joining adjacent ones into one
 * read and splitting long ones, so that a forward-only source can serve
 * them. `piece` gets each extent's bytes in order, `at` bytes into it; the
 * buffer is the callee's to keep. A short read is damage: the file ends
 * inside what its tables point at.
 */
export async function readInOrder<T>(
  source: ByteSource,
  extents: Extent<T>[],
  piece: (extent: Extent<T>, at: number, buf: Buffer) => Promise<void>,
  what: (extent: Extent<T>) => string,
  signal?: AbortSignal,
): Promise<void> {
  const sorted = [...extents].sort((a, b) => a.file - b.file);
  let i = 0;
  while (i < sorted.length) {
    if (signal?.aborted) throw new Error('interrupted');
    const first = sorted[i]!;
    if (first.length >= MAX_READ) {
      for (let at = 0; at < first.length; at += MAX_READ) {
        if (signal?.aborted) throw new Error('interrupted');
        const n = Math.min(MAX_READ, first.length - at);
        await piece(first, at, await readExactly(source, first.file + at, n, what(first)));
      }
      i++;
      continue;
    }
    let j = i + 1;
    let end = first.file + first.length;
    while (j < sorted.length && sorted[j]!.file === end && end + sorted[j]!.length - first.file <= MAX_READ) end += sorted[j++]!.length;
    const buf = await readExactly(source, first.file, end - first.file, what(first));
    for (let k = i; k < j; k++) {
      const e = sorted[k]!;
      await piece(e, 0, buf.subarray(e.file - first.file, e.file - first.file + e.length));
    }
    i = j;
  }
}

/** `length` bytes at `offset`, or an ImageFormatError saying the file ends inside `what`. */
export async function readExactly(source: ByteSource, offset: number, length: number, what: string): Promise<Buffer> {
  const buf = await source.read(offset, length);
  if (buf.length < length) throw new ImageFormatError(source.name, offset + buf.length, `the file ends inside ${what}`);
  return buf;
}

/** Throws for the first two extents (sorted by offset) that share bytes, naming both. */
export function checkNoOverlap<T>(source: string, extents: Extent<T>[], what: (extent: Extent<T>) => string): void {
  const sorted = [...extents].sort((a, b) => a.file - b.file);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.file < a.file + a.length) throw new ImageFormatError(source, b.file, `${what(b)} overlaps ${what(a)}`);
  }
}
