import { expect } from 'vitest';
import { fileSource } from '../../../src/image/byte-source.js';
import { openImage, sniffFormat } from '../../../src/image/formats.js';
import type { DiskFormat } from '../../../src/image/image-reader.js';
import { decodeAll } from './decode.js';
import { qemuRaw, qemuSize } from './qemu.js';
import { fileStream } from './sources.js';

/**
 * Checks that an image qemu-img made reads exactly as qemu-img converts it,
 * at the size qemu-img shows: detected from its magic and read at offsets,
 * then front to back as a member of a package arrives.
 */
export async function expectReadsAsQemu(img: string, qemuFormat: string, format: DiskFormat, subformat: string, scratch: string): Promise<void> {
  const expected = qemuRaw(img, scratch, qemuFormat);
  const source = fileSource(img);
  try {
    expect(await sniffFormat(source)).toBe(format);
    const reader = await openImage(source);
    expect([reader.format, reader.subformat]).toEqual([format, subformat]);
    expect(reader.virtualSize).toBe(qemuSize(img, qemuFormat));
    expect((await decodeAll(reader)).bytes.equals(expected)).toBe(true);
  } finally {
    await source.close();
  }
  const stream = fileStream(img, { chunk: 256 * 1024, name: `${img} in a stream` });
  try {
    const streamed = await openImage(stream, format);
    expect(streamed.virtualSize).toBe(expected.length);
    expect((await decodeAll(streamed)).bytes.equals(expected)).toBe(true);
  } finally {
    await stream.close();
  }
}
