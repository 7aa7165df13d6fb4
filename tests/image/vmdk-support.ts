import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { fileSource, streamSource, type ByteSource } from '../../src/image/byte-source.js';
import type { ImageReader, ImageSink } from '../../src/image/image-reader.js';
import type { ByteSink, ContentRun, ImageContent } from '../../src/image/image-writer.js';
import { openVmdk } from '../../src/image/vmdk/reader.js';
import { hasTool } from '../nbd/support.js';

/** What a decode reported: the bytes the image reads as (zeroes where nothing was said) and which ranges came as data or as zero. */
export interface Decoded {
  bytes: Buffer;
  data: [number, number][];
  zero: [number, number][];
}

/** A sink that keeps what it is told and, at the end, lays it into a buffer of the image's virtual size, refusing a range reported twice. */
export function memorySink(size: number): ImageSink & { result: () => Decoded } {
  const pieces: { offset: number; buf: Buffer | null; length: number }[] = [];
  const check = (offset: number, length: number): void => {
    if (offset < 0 || length <= 0 || offset + length > size) throw new Error(`range ${offset}+${length} outside ${size}`);
  };
  return {
    data: async (offset, buf) => {
      check(offset, buf.length);
      pieces.push({ offset, buf, length: buf.length });
    },
    zero: async (offset, length) => {
      check(offset, length);
      pieces.push({ offset, buf: null, length });
    },
    result: () => {
      const bytes = Buffer.alloc(size);
      const sorted = [...pieces].sort((a, b) => a.offset - b.offset);
      for (let i = 1; i < sorted.length; i++) if (sorted[i]!.offset < sorted[i - 1]!.offset + sorted[i - 1]!.length) throw new Error(`offset ${sorted[i]!.offset} reported twice`);
      for (const p of pieces) p.buf?.copy(bytes, p.offset);
      return { bytes, data: pieces.filter((p) => p.buf).map((p) => [p.offset, p.length]), zero: pieces.filter((p) => !p.buf).map((p) => [p.offset, p.length]) };
    },
  };
}

export async function decodeAll(reader: ImageReader): Promise<Decoded> {
  const sink = memorySink(reader.virtualSize);
  await reader.decode(sink);
  return sink.result();
}

/** A buffer handed out as a stream in chunks of `chunk` bytes, its length told (a tar member) or not (a pipe). */
export function bufferStream(buf: Buffer, chunk = 65536, name = 'stream', size: number | null = buf.length): ByteSource {
  const parts: Buffer[] = [];
  for (let at = 0; at < buf.length; at += chunk) parts.push(buf.subarray(at, at + chunk));
  return streamSource(Readable.from(parts, { objectMode: true }), name, size);
}

/** A buffer read at offsets, as a file is. */
export function bufferSource(buf: Buffer, name = 'image.vmdk'): ByteSource {
  return {
    name,
    size: buf.length,
    seekable: true,
    read: async (offset, length) => Buffer.from(buf.subarray(Math.min(offset, buf.length), Math.min(offset + length, buf.length))),
    close: async () => undefined,
  };
}

/** Decodes the VMDK in `file` read at offsets, or front to back from a stream of it. */
export async function decodeFile(file: string, how: 'file' | 'stream'): Promise<Decoded & { reader: ImageReader }> {
  const source = how === 'file' ? fileSource(file) : streamSource(fs.createReadStream(file, { highWaterMark: 37 * 1024 }), file, fs.statSync(file).size);
  try {
    const reader = await openVmdk(source);
    return { ...(await decodeAll(reader)), reader };
  } finally {
    await source.close();
  }
}

/** A ByteSink into memory: seekable like a file, or front to back like a pipe (gaps written as zeroes). */
export function memoryByteSink(name: string, seekable: boolean): ByteSink & { bytes: () => Buffer } {
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

/** Content from a model: `bytes` and the runs that say which parts are data, zero or hole (holes and zeroes must read zero). */
export function modelContent(bytes: Buffer, runs: ContentRun[]): ImageContent {
  return {
    size: bytes.length,
    runs: async function* () {
      yield* runs;
    },
    read: async (buf, offset) => {
      bytes.copy(buf, 0, offset, offset + buf.length);
    },
  };
}

const ZEROES = Buffer.alloc(1024 * 1024);

export function isZero(buf: Buffer): boolean {
  for (let at = 0; at < buf.length; at += ZEROES.length) {
    const end = Math.min(buf.length, at + ZEROES.length);
    if (buf.compare(ZEROES, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}

/** The runs of a buffer at 4 KiB: all-zero blocks as holes, the rest data. */
export function runsOfBuffer(bytes: Buffer, block = 4096): ContentRun[] {
  const runs: ContentRun[] = [];
  for (let at = 0; at < bytes.length; at += block) {
    const end = Math.min(bytes.length, at + block);
    const kind = isZero(bytes.subarray(at, end)) ? 'hole' : 'data';
    const last = runs[runs.length - 1];
    if (last && last.kind === kind) last.length += end - at;
    else runs.push({ offset: at, length: end - at, kind });
  }
  return runs;
}

/** Whether qemu-img is there (in CI it must be). */
export const haveQemu = (): boolean => hasTool('qemu-img') && hasTool('qemu-io');

/** Runs a qemu tool, throwing its stderr. */
export function qemu(tool: 'qemu-img' | 'qemu-io', args: string[]): string {
  const r = spawnSync(tool, args, { encoding: 'utf8' });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}
