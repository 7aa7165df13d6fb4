import fs from 'node:fs';
import type { Readable } from 'node:stream';
import { NotStreamableError } from './errors.js';

/**
 * Where an image's bytes come from: a file (read anywhere) or a stream (a pipe,
 * an HTTP body, a member of a tar being read front to back), read once.
 * Readers ask for bytes in increasing offset order wherever the format
 * allows, so that one reader serves both.
 */
export interface ByteSource {
  /** The name messages use: a path, a URL, `disk.vmdk in app.ova`. */
  readonly name: string;
  /** Bytes the source holds; null for a stream whose end is not known yet. */
  readonly size: number | null;
  /** True when `read` may go back to an offset it passed. */
  readonly seekable: boolean;
  /**
   * `length` bytes at `offset`; fewer only where the source ends (the caller
   * decides whether that is damage). A forward-only source discards what it
   * skips and throws NotStreamableError for an offset it has passed.
   */
  read(offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

/** A regular file, read at offsets. */
export function fileSource(path: string, name = path): ByteSource {
  const fd = fs.openSync(path, 'r');
  const size = fs.fstatSync(fd).size;
  return fdSource(fd, name, size, () => fs.closeSync(fd));
}

/** An open file descriptor of a regular file; `release` runs at close. */
export function fdSource(fd: number, name: string, size: number, release: () => void = () => undefined): ByteSource {
  let closed = false;
  return {
    name,
    size,
    seekable: true,
    read: (offset, length) => preadAll(fd, Buffer.allocUnsafe(Math.max(0, Math.min(length, size - offset))), offset, name),
    close: async () => {
      if (!closed) release();
      closed = true;
    },
  };
}

function preadAll(fd: number, buf: Buffer, position: number, name: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      if (done === buf.length) return resolve(buf);
      fs.read(fd, buf, done, buf.length - done, position + done, (err, n) => {
        if (err) return reject(new Error(`cannot read ${name} at offset ${position + done}: ${err.message}`));
        if (n === 0) return resolve(buf.subarray(0, done));
        step(done + n);
      });
    };
    step(0);
  });
}

/**
 * A Node stream read once, front to back. Holds at most one chunk of the
 * stream beyond what was asked for, so memory stays bounded whatever the
 * stream's length. `size`, when the container says it (a tar header, a
 * Content-Length), lets readers find a trailer; the stream is not trusted
 * to hold it: ending early reads as a short answer.
 */
export function streamSource(stream: Readable, name: string, size: number | null = null): ByteSource {
  const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  /** Offset of the first byte of `parts`. */
  let position = 0;
  const parts: Buffer[] = [];
  let held = 0;
  let ended = false;
  let failure: Error | undefined;
  const pull = async (): Promise<boolean> => {
    if (ended) return false;
    let next: IteratorResult<Buffer>;
    try {
      next = await chunks.next();
    } catch (err) {
      failure = err instanceof Error ? err : new Error(String(err));
      throw failure;
    }
    if (next.done) {
      ended = true;
      return false;
    }
    parts.push(next.value);
    held += next.value.length;
    return true;
  };
  const drop = (n: number): void => {
    position += n;
    held -= n;
    while (n > 0) {
      const first = parts[0]!;
      if (first.length <= n) {
        parts.shift();
        n -= first.length;
      } else {
        parts[0] = first.subarray(n);
        n = 0;
      }
    }
  };
  const read = async (offset: number, length: number): Promise<Buffer> => {
    if (failure) throw failure;
    if (offset < position) throw new NotStreamableError(name, offset, position);
    // Skip to offset, dropping what lies between.
    for (;;) {
      drop(Math.min(held, offset - position));
      if (position === offset || !(await pull())) break;
    }
    if (position < offset) return Buffer.alloc(0);
    while (held < length && (await pull()));
    const n = Math.min(length, held);
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    for (const part of parts) {
      if (at === n) break;
      at += part.copy(out, at, 0, Math.min(part.length, n - at));
    }
    drop(n);
    return out;
  };
  let queue: Promise<unknown> = Promise.resolve();
  return {
    name,
    size,
    seekable: false,
    // One read at a time: a stream has one position.
    read: (offset, length) => {
      const next = queue.then(() => read(offset, length));
      queue = next.catch(() => undefined);
      return next;
    },
    close: async () => {
      stream.destroy();
    },
  };
}
