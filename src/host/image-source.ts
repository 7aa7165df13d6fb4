import fs from 'node:fs';
import { detectFormat, HEAD_BYTES, TAIL_BYTES, type ImageFormat } from '../image/detect.js';

/**
 * Where an import reads: a regular file (read at offsets, several chunks at
 * once, its size known up front) or a stream (a pipe, `-` for stdin), read
 * once front to back, whose size is what it turns out to hold.
 */
export interface ImageSource {
  fd: number;
  /** The name messages use: the path, or 'stdin' for `-`. */
  file: string;
  /** Bytes of a regular file; null for a stream. */
  size: number | null;
  /** A stream's first bytes, read to look at its magic and not to be read again. */
  head: Buffer;
  /** The format its magic says; null for raw (or nothing known). */
  format: ImageFormat | null;
  close(): void;
}

/**
 * Opens FILE (`-` or `/dev/stdin`: stdin) and looks at its magic, so that an
 * image in another format is never copied in as raw bytes.
 */
export function openImageSource(file: string, firstRead: number): ImageSource {
  const name = file === '-' ? 'stdin' : file;
  let fd: number;
  // Taken as fd 0 rather than opened: Linux cannot open /dev/stdin when it is a socket (ENXIO), as a spawning process's pipe often is.
  if (file === '-' || file === '/dev/stdin') fd = 0;
  else {
    try {
      fd = fs.openSync(file, 'r');
    } catch (err) {
      throw new Error(`cannot read ${file}: ${systemReason(err)}`);
    }
  }
  const close = (): void => {
    if (fd !== 0) fs.closeSync(fd);
  };
  try {
    const st = fs.fstatSync(fd);
    const stream = st.isFIFO() || st.isSocket() || st.isCharacterDevice();
    if (!st.isFile() && !stream) throw new Error(`${name} is not a regular file`);
    let head: Buffer;
    let tail: Buffer | undefined;
    if (stream) {
      head = readFully(fd, name, Buffer.allocUnsafe(Math.max(firstRead, HEAD_BYTES)));
    } else {
      head = preadFully(fd, name, Buffer.allocUnsafe(Math.min(HEAD_BYTES, st.size)), 0);
      if (st.size >= TAIL_BYTES) tail = preadFully(fd, name, Buffer.allocUnsafe(TAIL_BYTES), st.size - TAIL_BYTES);
    }
    const format = detectFormat(head, tail);
    return { fd, file: name, size: stream ? null : st.size, head: stream ? head : Buffer.alloc(0), format, close };
  } catch (err) {
    close();
    throw err;
  }
}

/** Reads from the stream until `buf` is full or the stream ends; what was read. */
export function readFully(fd: number, name: string, buf: Buffer): Buffer {
  let done = 0;
  while (done < buf.length) {
    let n: number;
    try {
      n = fs.readSync(fd, buf, done, buf.length - done, null);
    } catch (err) {
      // A non-blocking stdin answers EAGAIN when the writer is slower than the reader.
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
        continue;
      }
      throw new Error(`cannot read ${name}: ${systemReason(err)}`);
    }
    if (n === 0) break;
    done += n;
  }
  return buf.subarray(0, done);
}

function preadFully(fd: number, name: string, buf: Buffer, position: number): Buffer {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  if (done < buf.length) throw new Error(`${name} shrank while it was being read`);
  return buf;
}

export function systemReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOENT') return 'no such file';
  if (e.code === 'EACCES' || e.code === 'EPERM') return 'permission denied';
  if (e.code === 'EISDIR') return 'is a directory';
  if (e.code === 'ENOSPC') return 'no space left on the device';
  if (e.code === 'EFBIG') return 'larger than the file system allows';
  return e.message;
}
