import fs from 'node:fs';
import type { Writable } from 'node:stream';
import type { BlockDevice } from '../blockdev/index.js';
import { readFully, systemReason, type ImageSource } from './image-source.js';
import { readVerified, type Range } from './salvage-read.js';
import { formatSize } from './size.js';
import { volumeRuns, type Mappable } from './volume-runs.js';

/**
 * The copy loops of import and export, between a raw image (a file, a pipe, a
 * stream) and a volume or any BlockDevice (a served volume's NBD export):
 * sparse both ways, several chunks in flight, stopped between chunks by
 * `signal`. They report to a progress sink and print nothing.
 */

/** What a copy reports its progress to (the CLI's progress bar, a job). */
export interface CopyProgress {
  update(done: number): void;
  finish(): void;
}

/** Raw images move in chunks this large: few calls, and a bounded amount in memory. */
export const CHUNK = 4 * 1024 * 1024;
/** Chunks in flight at once, each with its own buffer. */
const DEPTH = 4;
/** The grain at which zero runs are found and left unwritten: the page size, the smallest unit a file can leave sparse. */
const GRANULE = 4096;

/**
 * A pipe is read once, front to back, a chunk at a time (its first bytes were
 * read already to look at its magic); a stream longer than the volume fails
 * the import rather than being cut short.
 */
export async function copyStreamIntoVolume(src: ImageSource, volume: BlockDevice, ref: string, fresh: boolean, bar: CopyProgress, signal?: AbortSignal): Promise<{ bytesWritten: number; zeroBytes: number; bytesRead: number }> {
  let bytesWritten = 0;
  let zeroBytes = 0;
  let pos = 0;
  const buf = Buffer.allocUnsafe(CHUNK);
  let chunk: Buffer = src.head;
  try {
    while (chunk.length > 0) {
      if (signal?.aborted) throw new Error('interrupted');
      if (pos + chunk.length > volume.size) throw new Error(`${src.file} holds more than ${ref} (${formatSize(volume.size)})`);
      const n = await writeChunk(volume, chunk, pos, fresh);
      bytesWritten += n.written;
      zeroBytes += n.zero;
      pos += chunk.length;
      bar.update(pos);
      chunk = readFully(src.fd, src.file, buf);
    }
  } finally {
    bar.finish();
  }
  return { bytesWritten, zeroBytes, bytesRead: pos };
}

/** Writes one chunk of an image at `pos`: its data runs as writes, its zero runs as nothing on a new volume (it reads zeroes already) or as write-zeroes on an existing one. */
async function writeChunk(volume: BlockDevice, chunk: Buffer, pos: number, fresh: boolean): Promise<{ written: number; zero: number }> {
  let written = 0;
  let zero = 0;
  for (const run of runsOf(chunk)) {
    if (run.zero) {
      zero += run.length;
      if (!fresh) await volume.writeZeroes(pos + run.offset, run.length, { mayUnmap: true });
    } else {
      await volume.write(chunk.subarray(run.offset, run.offset + run.length), pos + run.offset);
      written += run.length;
    }
  }
  return { written, zero };
}

export interface Source {
  fd: number;
  file: string;
  size: number;
}

export async function copyIntoVolume(src: Source, volume: BlockDevice, fresh: boolean, bar: CopyProgress, signal?: AbortSignal): Promise<{ bytesWritten: number; zeroBytes: number }> {
  let bytesWritten = 0;
  let zeroBytes = 0;
  let done = 0;
  const buffers = Array.from({ length: DEPTH }, () => Buffer.allocUnsafe(CHUNK));
  try {
    await inParallel(chunkOffsets(src.size), async (pos, slot) => {
      const chunk = await readChunk(src, buffers[slot]!, pos);
      const n = await writeChunk(volume, chunk, pos, fresh);
      bytesWritten += n.written;
      zeroBytes += n.zero;
      bar.update((done += chunk.length));
    }, signal);
  } finally {
    bar.finish();
  }
  return { bytesWritten, zeroBytes };
}

function* chunkOffsets(size: number): Generator<number> {
  for (let pos = 0; pos < size; pos += CHUNK) yield pos;
}

/**
 * Runs `work` on every item with up to `depth` items in flight, each on its own
 * buffer slot: the file and the volume both see several requests at once,
 * which is where the throughput is. The first failure stops the rest and is
 * rethrown once nothing is in flight any more.
 */
export async function inParallel<T>(items: Iterator<T> | AsyncIterator<T>, work: (item: T, slot: number) => Promise<void>, signal: AbortSignal | undefined, depth = DEPTH): Promise<void> {
  let failure: { err: unknown } | undefined;
  const worker = async (slot: number): Promise<void> => {
    while (!failure) {
      try {
        if (signal?.aborted) throw new Error('interrupted');
        const next = await items.next();
        if (next.done) return;
        await work(next.value, slot);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: depth }, (_, slot) => worker(slot)));
  if (failure) throw failure.err;
}

/**
 * A stream has no holes: every byte of the volume is written in order, zero
 * runs from one shared zero buffer without reading them. Waits for the reader
 * (stdout's drain), so memory stays at one chunk whatever the pipe's pace.
 */
export async function copyToStream(volume: BlockDevice & Mappable, out: Writable, bar: CopyProgress, bad: Range[] | undefined, signal?: AbortSignal): Promise<{ bytesWritten: number }> {
  let bytesWritten = 0;
  const zero = Buffer.alloc(CHUNK);
  const put = async (buf: Buffer): Promise<void> => {
    if (!out.write(buf)) await new Promise<void>((resolve) => out.once('drain', resolve));
  };
  try {
    for await (const run of volumeRuns(volume)) {
      for (let pos = run.offset; pos < run.offset + run.length; pos += CHUNK) {
        if (signal?.aborted) throw new Error('interrupted');
        const length = Math.min(CHUNK, run.offset + run.length - pos);
        if (run.zero) await put(zero.subarray(0, length));
        else {
          // A fresh buffer per chunk: the stream may still hold the previous one.
          const chunk = Buffer.allocUnsafe(length);
          await readVerified(volume, chunk, pos, bad);
          await put(chunk);
          bytesWritten += length;
        }
        bar.update(pos + length);
      }
    }
  } finally {
    bar.finish();
  }
  return { bytesWritten };
}

export async function copyFromVolume(volume: BlockDevice & Mappable, target: { fd: number; file: string }, bar: CopyProgress, bad: Range[] | undefined, signal?: AbortSignal): Promise<{ bytesWritten: number }> {
  let bytesWritten = 0;
  let done = 0;
  const buffers = Array.from({ length: DEPTH }, () => Buffer.allocUnsafe(CHUNK));
  // Data runs cut into chunks; zero runs and holes are counted as done and never read.
  async function* dataChunks(): AsyncGenerator<{ offset: number; length: number }> {
    for await (const run of volumeRuns(volume)) {
      if (run.zero) bar.update((done += run.length));
      else for (let pos = run.offset; pos < run.offset + run.length; pos += CHUNK) yield { offset: pos, length: Math.min(CHUNK, run.offset + run.length - pos) };
    }
  }
  try {
    await inParallel(dataChunks(), async ({ offset, length }, slot) => {
      const chunk = buffers[slot]!.subarray(0, length);
      await readVerified(volume, chunk, offset, bad);
      for (const piece of runsOf(chunk)) {
        if (piece.zero) continue;
        await writeAll(target, chunk.subarray(piece.offset, piece.offset + piece.length), offset + piece.offset);
        bytesWritten += piece.length;
      }
      bar.update((done += length));
    }, signal);
  } finally {
    bar.finish();
  }
  return { bytesWritten };
}

/** Splits a chunk into maximal runs of all-zero and not-all-zero granules. */
export function* runsOf(chunk: Buffer): Generator<{ offset: number; length: number; zero: boolean }> {
  let start = 0;
  let zero = true;
  for (let at = 0; at < chunk.length; at += GRANULE) {
    const end = Math.min(at + GRANULE, chunk.length);
    const z = isZero(chunk, at, end);
    if (at === 0) zero = z;
    else if (z !== zero) {
      yield { offset: start, length: at - start, zero };
      start = at;
      zero = z;
    }
  }
  if (chunk.length > start) yield { offset: start, length: chunk.length - start, zero };
}

const zeroes = Buffer.alloc(GRANULE);

function isZero(buf: Buffer, start: number, end: number): boolean {
  return buf.compare(zeroes, 0, end - start, start, end) === 0;
}

/** Reads the chunk of the source at `position`, up to CHUNK bytes and never past the size taken at the start. */
function readChunk(src: Source, buf: Buffer, position: number): Promise<Buffer> {
  const length = Math.min(CHUNK, src.size - position);
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      fs.read(src.fd, buf, done, length - done, position + done, (err, n) => {
        if (err) return reject(new Error(`cannot read ${src.file} at offset ${position + done}: ${systemReason(err)}`));
        if (n === 0) return reject(new Error(`${src.file} shrank while it was being imported (ended at ${position + done})`));
        if (done + n < length) return step(done + n);
        resolve(buf.subarray(0, length));
      });
    };
    step(0);
  });
}

function writeAll(target: { fd: number; file: string }, buf: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      fs.write(target.fd, buf, done, buf.length - done, position + done, (err, n) => {
        if (err) return reject(new Error(`cannot write ${target.file} at offset ${position + done}: ${systemReason(err)}`));
        if (done + n < buf.length) return step(done + n);
        resolve();
      });
    };
    step(0);
  });
}
