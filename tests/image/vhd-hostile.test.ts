import fs from 'node:fs';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { fileSource, streamSource } from '../../src/image/byte-source.js';
import { streamSink } from '../../src/image/file-sink.js';
import { ImageFormatError } from '../../src/image/errors.js';
import type { ImageReader } from '../../src/image/image-reader.js';
import { vhdChecksum } from '../../src/image/vhd/footer.js';
import { geometryFor } from '../../src/image/vhd/geometry.js';
import { openVhd } from '../../src/image/vhd/reader.js';
import { writeVhd } from '../../src/image/vhd/writer.js';
import { hasTool } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { bufferContent, decodeAll, qemu, qemuSize } from './vhd-support.js';

const scratch = scratchDir('vhd-hostile');
afterAll(() => scratch.cleanup());
let n = 0;
const file = (name: string): string => path.join(scratch.dir, `${n++}-${name}`);

/** An image Strata writes, as bytes: data in blocks 0 and 2 of a 10 MiB disk. */
async function image(subformat = 'dynamic', size = 10 << 20): Promise<Buffer> {
  const bytes = Buffer.alloc(size);
  bytes.fill(0x11, 0, 8192);
  bytes.fill(0x22, 4 << 20, (4 << 20) + 4096);
  const parts: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      parts.push(Buffer.from(chunk));
      done();
    },
  });
  await writeVhd(bufferContent(bytes, 4096), streamSink(out, 'out'), { subformat });
  return Buffer.concat(parts);
}

const fixFooter = (img: Buffer, at: number): number => img.writeUInt32BE(vhdChecksum(img.subarray(at, at + 512), 64), at + 64);
const fixHeader = (img: Buffer): number => img.writeUInt32BE(vhdChecksum(img.subarray(512, 1536), 36), 512 + 36);
const BAT = 1536;

async function open(img: Buffer): Promise<ImageReader> {
  const f = file('hostile.vhd');
  fs.writeFileSync(f, img);
  return openVhd(fileSource(f));
}

/** Opens and decodes; the error it ends with. */
async function failure(img: Buffer): Promise<ImageFormatError> {
  try {
    await decodeAll(await open(img));
  } catch (err) {
    expect(err).toBeInstanceOf(ImageFormatError);
    return err as ImageFormatError;
  }
  throw new Error('the image was accepted');
}

describe('hostile VHDs are refused, naming the offset', () => {
  it('a footer whose checksum does not match', async () => {
    const img = await image();
    img[40] ^= 1;
    const e = await failure(img);
    expect(e.message).toMatch(/hostile\.vhd: the footer checksum does not match \(at offset 0\)$/);
  });

  it('a dynamic header whose checksum does not match', async () => {
    const img = await image();
    img[512 + 100] ^= 1;
    expect((await failure(img)).message).toMatch(/the dynamic header checksum does not match \(at offset 512\)/);
  });

  it('a BAT past the end of the file', async () => {
    const img = await image();
    img.writeBigUInt64BE(BigInt(img.length + 4096), 512 + 16);
    fixHeader(img);
    expect((await failure(img)).message).toMatch(/the BAT runs past the footer/);
  });

  it('a BAT too small for the disk', async () => {
    const img = await image();
    img.writeUInt32BE(2, 512 + 28);
    fixHeader(img);
    expect((await failure(img)).message).toMatch(/the BAT maps 4194304 bytes of the disk's 10485760 \(at offset 540\)/);
  });

  it('a block overlapping the footer', async () => {
    const img = await image();
    img.writeUInt32BE((img.length - 512 - (2 << 20)) / 512, BAT + 4);
    const e = await failure(img);
    expect(e.message).toMatch(/block 1 \(at file offset \d+\) overlaps the footer at \d+/);
    expect(e.offset).toBe(BAT + 4);
  });

  it('a block past the end of the file', async () => {
    const img = await image();
    img.writeUInt32BE(img.length / 512 + 8, BAT + 12);
    expect((await failure(img)).message).toMatch(/block 3 .* ends past the end of the file/);
  });

  it('two blocks sharing bytes, and a block over the BAT', async () => {
    const img = await image();
    img.writeUInt32BE(img.readUInt32BE(BAT) + 1, BAT + 4);
    expect((await failure(img)).message).toMatch(/block 1 \(at file offset \d+\) overlaps block 0/);
    const other = await image();
    other.writeUInt32BE(BAT / 512, BAT + 4);
    expect((await failure(other)).message).toMatch(/overlaps the BAT|the BAT overlaps block 1/);
  });

  it('a truncated file, dynamic or fixed', async () => {
    const img = await image();
    expect((await failure(img.subarray(0, img.length - 100 * 1024))).message).toMatch(/no VHD footer \("conectix"\) at the end of the file \(truncated\?\)|past the end of the file/);
    const fixed = await image('fixed');
    expect((await failure(fixed.subarray(0, fixed.length - 700))).message).toMatch(/no VHD footer/);
  });

  it('a stream whose footer does not match the data it followed', async () => {
    const img = await image('fixed');
    img.writeBigUInt64BE(BigInt(8 << 20), img.length - 512 + 48);
    fixFooter(img, img.length - 512);
    const reader = await openVhd(streamSource(Readable.from([img]), 'piped.vhd', img.length));
    await expect(decodeAll(reader)).rejects.toThrow(/piped\.vhd: the footer gives 8388608 bytes, not the 10485760 bytes of data before it/);
  });
});

describe('differencing VHDs', () => {
  /** Our dynamic image turned into a child: its block 0 holds 8 sectors of its own; a W2ru locator names the parent. */
  async function child(locator: string | null, unicodeName: string): Promise<Buffer> {
    const base = await image();
    const at = base.length - 512;
    const data = Buffer.alloc(512);
    if (locator !== null) data.write(locator, 'utf16le');
    const img = Buffer.concat([base.subarray(0, at), data, base.subarray(at)]);
    for (const f of [0, img.length - 512]) {
      img.writeUInt32BE(4, f + 60);
      fixFooter(img, f);
    }
    Buffer.from(unicodeName, 'utf16le').swap16().copy(img, 512 + 64);
    if (locator !== null) {
      img.write('W2ru', 512 + 576, 'latin1');
      img.writeUInt32BE(1, 512 + 576 + 4);
      img.writeUInt32BE(Buffer.byteLength(locator, 'utf16le'), 512 + 576 + 8);
      img.writeBigUInt64BE(BigInt(at), 512 + 576 + 16);
    }
    fixHeader(img);
    const block0 = img.readUInt32BE(BAT) * 512;
    img.fill(0, block0, block0 + 512);
    img[block0] = 0xff; // sectors 0-7 are this layer's, the rest of the block the parent's
    return img;
  }

  it('name their parent from the relative locator and report only their own sectors', async () => {
    const reader = await open(await child('.\\images\\base.vhd', 'base.vhd'));
    expect(reader.subformat).toBe('differencing');
    expect(reader.backing).toEqual({ file: 'images/base.vhd', format: 'vhd' });
    const got = await decodeAll(reader);
    expect(got.data.filter(([o]) => o < 2 << 20)).toEqual([[0, 4096]]);
    expect(got.bytes.subarray(0, 4096).every((b) => b === 0x11)).toBe(true);
  });

  it('fall back on the unicode name, and refuse a child that names no parent', async () => {
    expect((await open(await child(null, 'parent disk.vhd'))).backing).toEqual({ file: 'parent disk.vhd', format: 'vhd' });
    expect((await failure(await child(null, ''))).message).toMatch(/a differencing disk that names no parent/);
  });
});

describe.skipIf(!hasTool('qemu-img'))('the size of a VHD, as qemu-img shows it for each creator', () => {
  // 10 MiB is no CHS product: the geometry rounds down, the current size stays exact.
  const creators: [string, string, string][] = [
    ['Hyper-V', 'win ', 'fixed'],
    ['Virtual PC', 'vpc ', 'fixed'],
    ['Virtual PC', 'vpc ', 'dynamic'],
    ['qemu', 'qemu', 'dynamic'],
    ['XenServer', 'tap\0', 'dynamic'],
  ];
  it.each(creators)('%s (creator %j, %s)', async (_who, creator, subformat) => {
    const img = await image(subformat);
    const g = geometryFor((10 << 20) / 512);
    for (const f of subformat === 'fixed' ? [img.length - 512] : [0, img.length - 512]) {
      img.write(creator, f + 28, 'latin1');
      img.writeUInt16BE(g.cylinders, f + 56);
      img[f + 58] = g.heads;
      img[f + 59] = g.sectorsPerTrack;
      fixFooter(img, f);
    }
    const out = file('creator.vhd');
    fs.writeFileSync(out, img);
    const reader = await openVhd(fileSource(out));
    expect(reader.virtualSize).toBe(qemuSize(out, 'vpc'));
    const chs = g.cylinders * g.heads * g.sectorsPerTrack * 512;
    expect(reader.virtualSize).toBe(creator === 'vpc ' || creator === 'qemu' ? chs : 10 << 20);
    const raw = file('creator.raw');
    qemu('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', out, raw]);
    expect((await decodeAll(reader)).bytes.equals(fs.readFileSync(raw))).toBe(true);
  });
});
