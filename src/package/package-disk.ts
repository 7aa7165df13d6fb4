import { PassThrough, Transform, type Readable } from 'node:stream';
import zlib from 'node:zlib';
import { streamSource, type ByteSource } from '../image/byte-source.js';
import { detectFormat, formatName, HEAD_BYTES } from '../image/detect.js';
import { openImage } from '../image/formats.js';
import type { DiskFormat, ImageReader } from '../image/image-reader.js';
import { PackageError } from './errors.js';
import type { OvfDisk, OvfFile } from './ovf-descriptor.js';

/** A disk a package carries, as handed to the importer with its bytes. */
export interface PackageDisk {
  diskId: string;
  /** The name of its disk in the settings. */
  name: string;
  file: OvfFile;
  format: DiskFormat;
  subformat: string | null;
  capacity: number;
}

/** A disk of the descriptor that has a file; refused when its format is unknown (the descriptor parser checked). */
export function packageDisk(d: OvfDisk, descriptor: string): PackageDisk {
  if (d.file === null) throw new PackageError(descriptor, `disk ${d.diskId} has no file`);
  if (d.format === null) throw new PackageError(descriptor, `disk ${d.diskId}: its format is not known`);
  return { diskId: d.diskId, name: d.name, file: d.file, format: d.format, subformat: d.subformat, capacity: d.capacity };
}

/** Raw bytes that pass through, refused past `limit` (a raw disk's declared capacity). */
function capacityGuard(limit: number, name: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > limit) done(new PackageError(name, `holds more than its declared capacity of ${limit} bytes`));
      else done(null, chunk);
    },
  });
}

/**
 * The decoding chain of one disk file: what the package stores goes into
 * `input` (one file, or its chunks one after another), the disk's bytes
 * come out of `source`: gunzipped when the file is, and for a raw disk
 * refused beyond its capacity. `stop` ends the chain when the importer has
 * read what it wants (the rest of the file is still hashed by the caller).
 */
export interface DiskChain {
  input: PassThrough;
  source: ByteSource;
  /** Fails what the importer reads next. */
  fail(err: Error): void;
  stop(): void;
}

export function diskChain(disk: PackageDisk, name: string, storedSize: number | null): DiskChain {
  const input = new PassThrough({ highWaterMark: 1024 * 1024 });
  let out: Readable = input;
  const gzip = disk.file.compression === 'gzip';
  const last = disk.format === 'raw' ? capacityGuard(disk.capacity, name) : new PassThrough();
  const fail = (err: Error): void => {
    last.destroy(err);
  };
  if (gzip) {
    const gunzip = zlib.createGunzip();
    gunzip.on('error', (err) => fail(new PackageError(name, `its gzip data is damaged: ${err.message}`)));
    out = input.pipe(gunzip);
  }
  out.pipe(last);
  // A raw disk's size is its capacity when gzipped (the stream says no size); otherwise what the package stores.
  const size = gzip ? (disk.format === 'raw' ? disk.capacity : null) : storedSize;
  if (!gzip && disk.format === 'raw' && storedSize !== null && storedSize > disk.capacity) throw new PackageError(name, `is ${storedSize} bytes, more than its declared capacity of ${disk.capacity} bytes`);
  return {
    input,
    source: streamSource(last, name, size),
    fail,
    stop: () => {
      input.destroy();
      last.destroy();
    },
  };
}

/** A decode running on a disk's chain: the feeder checks `failure` between chunks and waits for `done` at the end. */
export interface DiskDecode {
  failure: { err: unknown } | undefined;
  done: Promise<void>;
}

/** Starts `decode` on the chain's source; when it ends the chain stops, and a failure is kept for the feeder rather than lost. */
export function startDecode(chain: DiskChain, decode: (source: ByteSource) => Promise<void>): DiskDecode {
  const d: DiskDecode = { failure: undefined, done: Promise.resolve() };
  d.done = decode(chain.source).then(
    () => chain.stop(),
    (err: unknown) => {
      d.failure = { err };
      chain.stop();
    },
  );
  return d;
}

/**
 * Opens a package's disk as an image of the format its descriptor says,
 * refused when the file's magic names another format, or when the image is
 * larger than the capacity the descriptor declares (a raw disk is checked
 * as its bytes flow). The reader owns `source` from here on: a stream has
 * passed its head already.
 */
export async function openPackageDisk(disk: PackageDisk, source: ByteSource): Promise<ImageReader> {
  const peeked = await peekHead(source);
  const found = detectFormat(peeked.head);
  // Raw has no magic, and a fixed VHD's is at its end: only a magic that names another format is a contradiction.
  if (found !== null && found !== disk.format) throw new PackageError(source.name, `the descriptor says ${disk.format}, but the file is ${formatName(found)}`);
  const reader = await openImage(peeked.source, disk.format);
  if (reader.virtualSize > disk.capacity) throw new PackageError(source.name, `is a ${reader.virtualSize}-byte image, larger than its declared capacity of ${disk.capacity} bytes`);
  return reader;
}

/** Resolves when `s` takes more, or is closed. */
export function writable(s: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.on('drain', done);
    s.on('close', done);
  });
}

/** Writes `chunk` into `s` unless it was closed, waiting while it is full. */
export async function feed(s: PassThrough, chunk: Buffer): Promise<void> {
  if (s.destroyed || s.writableEnded) return;
  if (!s.write(chunk)) await writable(s);
}

/**
 * The first bytes of `source` and a source that still starts at 0: a stream
 * cannot be read twice, so the head is kept and served again.
 */
export async function peekHead(source: ByteSource): Promise<{ head: Buffer; source: ByteSource }> {
  const head = await source.read(0, HEAD_BYTES);
  if (source.seekable) return { head, source };
  return {
    head,
    source: {
      name: source.name,
      size: source.size,
      seekable: false,
      read: async (offset, length) => {
        if (offset >= head.length) return source.read(offset, length);
        const kept = head.subarray(offset, Math.min(head.length, offset + length));
        if (kept.length === length || head.length < HEAD_BYTES) return Buffer.from(kept);
        return Buffer.concat([kept, await source.read(head.length, length - kept.length)]);
      },
      close: () => source.close(),
    },
  };
}
