import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, expect } from 'vitest';
import type { ByteSource } from '../../src/image/byte-source.js';
import type { ImageReader } from '../../src/image/image-reader.js';
import type { ContentRun, ImageContent } from '../../src/image/image-writer.js';
import { ImageFormatError, UnsupportedImageError } from '../../src/image/errors.js';
import { scratchDir } from '../support/scratch.js';

/** Names fresh files in a scratch directory that goes when the test file ends. */
export function scratchFiles(prefix: string): (name: string) => string {
  const scratch = scratchDir(prefix);
  afterAll(() => scratch.cleanup());
  let n = 0;
  return (name) => path.join(scratch.dir, `${n++}-${name}`);
}

/** An image qemu-img creates at `img` and qemu-io then writes; `writes` gets the virtual size qemu-img chose. */
export function qemuImage(format: 'vpc' | 'vhdx', img: string, size: string, options: string[], writes: (virtual: number) => string[][]): string {
  qemu('qemu-img', ['create', '-q', '-f', format, ...options, img, size]);
  qemu('qemu-io', ['-f', format, ...writes(qemuSize(img, format)).flatMap((w) => ['-c', `write ${w.join(' ')}`]), img]);
  return img;
}

/** Decodes an image that must be refused; the error, which must name damage or something unsupported. */
export async function refusal(open: () => Promise<ImageReader>): Promise<Error> {
  try {
    await decodeAll(await open());
  } catch (err) {
    expect(err instanceof ImageFormatError || err instanceof UnsupportedImageError, String(err)).toBe(true);
    return err as Error;
  }
  throw new Error('the image was accepted');
}

/** Runs qemu-img (or qemu-io); returns stdout, throws with stderr. */
export function qemu(tool: 'qemu-img' | 'qemu-io', args: string[]): string {
  const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${tool} is needed (scripts/test-deps.sh installs it): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** The virtual size qemu-img reports for an image. */
export function qemuSize(file: string, format: string): number {
  return (JSON.parse(qemu('qemu-img', ['info', '-f', format, '--output', 'json', file])) as { 'virtual-size': number })['virtual-size'];
}

/** The guest's bytes of an image as qemu-img converts them. */
export function qemuRaw(file: string, format: string, scratch: string): Buffer {
  qemu('qemu-img', ['convert', '-f', format, '-O', 'raw', file, scratch]);
  const data = fs.readFileSync(scratch);
  fs.rmSync(scratch);
  return data;
}

/**
 * Decodes a whole image into memory, checking the reader's contract on the
 * way: every range inside the disk, none reported twice.
 */
export async function decodeAll(reader: ImageReader): Promise<{ bytes: Buffer; data: [number, number][]; zero: [number, number][] }> {
  const bytes = Buffer.alloc(reader.virtualSize);
  const seen: [number, number][] = [];
  const data: [number, number][] = [];
  const zero: [number, number][] = [];
  const claim = (offset: number, length: number): void => {
    expect(offset).toBeGreaterThanOrEqual(0);
    expect(offset + length).toBeLessThanOrEqual(reader.virtualSize);
    for (const [o, l] of seen) expect(offset >= o + l || offset + length <= o, `range ${offset}+${length} reported twice`).toBe(true);
    seen.push([offset, length]);
  };
  await reader.decode({
    data: async (offset, buf) => {
      claim(offset, buf.length);
      buf.copy(bytes, offset);
      data.push([offset, buf.length]);
    },
    zero: async (offset, length) => {
      claim(offset, length);
      zero.push([offset, length]);
    },
  });
  return { bytes, data, zero };
}

const ZEROES = Buffer.alloc(1 << 20);

/** A disk's bytes as writer content: granules (1 MiB at most) that hold data are data, the others holes (or zero runs where `zeroAt` says). */
export function bufferContent(bytes: Buffer, granule = 64 * 1024, zeroAt: (offset: number) => boolean = () => false): ImageContent {
  const runs: ContentRun[] = [];
  for (let at = 0; at < bytes.length; at += granule) {
    const length = Math.min(granule, bytes.length - at);
    const kind = !bytes.subarray(at, at + length).equals(ZEROES.subarray(0, length)) ? 'data' : zeroAt(at) ? 'zero' : 'hole';
    const last = runs[runs.length - 1];
    if (last && last.kind === kind) last.length += length;
    else runs.push({ offset: at, length, kind });
  }
  return {
    size: bytes.length,
    runs: async function* () {
      yield* runs;
    },
    read: async (buf, offset) => {
      buf.fill(0);
      bytes.copy(buf, 0, offset, Math.min(bytes.length, offset + buf.length));
    },
  };
}

/** An image held in memory, read at offsets like a file. */
export function bufferSource(bytes: Buffer, name: string): ByteSource {
  return {
    name,
    size: bytes.length,
    seekable: true,
    read: async (offset, length) => Buffer.from(bytes.subarray(Math.min(offset, bytes.length), Math.min(offset + length, bytes.length))),
    close: async () => undefined,
  };
}
