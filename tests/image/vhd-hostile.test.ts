import fs from 'node:fs';
import { Readable, Writable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fileSource, streamSource } from '../../src/image/byte-source.js';
import { streamSink } from '../../src/image/file-sink.js';
import { ImageFormatError, UnsupportedImageError } from '../../src/image/errors.js';
import type { ImageReader } from '../../src/image/image-reader.js';
import { encodeDynamicHeader } from '../../src/image/vhd/dynamic-header.js';
import { encodeFooter, vhdChecksum } from '../../src/image/vhd/footer.js';
import { geometryFor } from '../../src/image/vhd/geometry.js';
import { openVhd } from '../../src/image/vhd/reader.js';
import { writeVhd } from '../../src/image/vhd/writer.js';
import { hasTool } from '../nbd/support.js';
import { propertyRuns } from '../support/scratch.js';
import { bufferContent, runsOf } from './support/content.js';
import { decodeAll, refusal } from './support/decode.js';
import { qemuRaw, qemuSize } from './support/qemu.js';
import { scratchFiles } from './support/scratch-files.js';
import { bufferSource } from './support/sources.js';

const file = scratchFiles('vhd-hostile');

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
  await writeVhd(bufferContent(bytes, runsOf(bytes, 4096)), streamSink(out, 'out'), { subformat });
  return Buffer.concat(parts);
}

const fixFooter = (img: Buffer, at: number): number => img.writeUInt32BE(vhdChecksum(img.subarray(at, at + 512), 64), at + 64);
const fixHeader = (img: Buffer): number => img.writeUInt32BE(vhdChecksum(img.subarray(512, 1536), 36), 512 + 36);
const BAT = 1536;

const open = (img: Buffer): Promise<ImageReader> => openVhd(bufferSource(img, 'hostile.vhd'));

/** Opens and decodes; the error it ends with, which must name damage. */
async function failure(img: Buffer): Promise<ImageFormatError> {
  const err = await refusal(() => open(img));
  expect(err).toBeInstanceOf(ImageFormatError);
  return err as ImageFormatError;
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

describe('BAT sizes', () => {
  it('a BAT sized for a larger disk is read, the entries past the disk unused', async () => {
    const img = await image();
    img.writeUInt32BE(100, 512 + 28);
    fixHeader(img);
    const got = await decodeAll(await open(img));
    expect(got.bytes.subarray(0, 8192).every((b) => b === 0x11)).toBe(true);
  });

  it('a BAT too large to hold is refused before it is read', async () => {
    const img = await image();
    const size = 1900 * 2 ** 30;
    for (const f of [0, img.length - 512]) {
      img.write('qem2', f + 28, 'latin1');
      img.writeBigUInt64BE(BigInt(size), f + 48);
      fixFooter(img, f);
    }
    img.writeUInt32BE(4_100_000_000, 512 + 28);
    img.writeUInt32BE(512, 512 + 32);
    fixHeader(img);
    await expect(open(img)).rejects.toThrow(UnsupportedImageError);
    await expect(open(img)).rejects.toThrow(/a BAT of 3984588800 entries \(512-byte blocks; Strata reads BATs up to 268435456 bytes\) is not supported/);
  });
});

describe('a VHD with any BAT', () => {
  it('reads within the disk or is refused as damage (property)', async () => {
    const img = await image();
    const sectors = img.length / 512;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.nat(4), fc.oneof(fc.nat(sectors + 8), fc.constant(0xffffffff))), { minLength: 1, maxLength: 5 }), async (edits) => {
        const copy = Buffer.from(img);
        for (const [entry, sector] of edits) copy.writeUInt32BE(sector, BAT + entry * 4);
        try {
          expect((await decodeAll(await open(copy))).bytes.length).toBe(10 << 20);
        } catch (err) {
          expect(err instanceof ImageFormatError, String(err)).toBe(true);
        }
      }),
      { numRuns: propertyRuns(100, 30) },
    );
  });
});

describe('differencing VHDs', () => {
  /** Our dynamic image turned into a child: its block 0 holds 4 sectors of its own; a W2ru locator names the parent. */
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
    img[block0] = 0xf0; // sectors 0-3 are this layer's (most significant bit first), the rest of the block the parent's
    return img;
  }

  it('name their parent from the relative locator and report only their own sectors', async () => {
    const reader = await open(await child('.\\images\\base.vhd', 'base.vhd'));
    expect(reader.subformat).toBe('differencing');
    expect(reader.backing).toEqual({ file: 'images/base.vhd', format: 'vhd' });
    const got = await decodeAll(reader);
    expect(got.data.filter(([o]) => o < 2 << 20)).toEqual([[0, 2048]]);
    expect(got.bytes.subarray(0, 2048).every((b) => b === 0x11)).toBe(true);
  });

  it('fall back on the unicode name, and refuse a child that names no parent', async () => {
    expect((await open(await child(null, 'parent disk.vhd'))).backing).toEqual({ file: 'parent disk.vhd', format: 'vhd' });
    expect((await failure(await child(null, ''))).message).toMatch(/a differencing disk that names no parent/);
  });
});

describe.skipIf(!hasTool('qemu-img'))('a dynamic VHD of 512 KiB blocks laid out out of order', () => {
  it('reads as qemu-img reads it', async () => {
    const blockSize = 512 * 1024;
    const size = 3 << 20;
    const g = geometryFor(size / 512);
    const footer = encodeFooter({ type: 'dynamic', dataOffset: 512, creatorApp: 'win ', currentSize: size, geometry: g });
    const entries = size / blockSize;
    const bat = Buffer.alloc(512, 0xff);
    // Blocks 5, 0 and 2, in that order in the file: the reader must sort them.
    const order = [5, 0, 2];
    const blocks = order.map((index, i) => {
      bat.writeUInt32BE((2048 + i * (512 + blockSize)) / 512, index * 4);
      const data = Buffer.alloc(blockSize, 0x30 + index);
      return Buffer.concat([Buffer.alloc(512, 0xff), data]);
    });
    const img = Buffer.concat([footer, encodeDynamicHeader({ tableOffset: 1536, maxTableEntries: entries, blockSize }), bat, ...blocks, footer]);
    const out = file('small-blocks.vhd');
    fs.writeFileSync(out, img);
    const got = await decodeAll(await openVhd(fileSource(out)));
    expect(got.bytes.equals(qemuRaw(out, file('small-blocks.raw'), 'vpc'))).toBe(true);
    expect(got.data.map(([o]) => o / blockSize).sort()).toEqual([0, 2, 5]);
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
    if (creator === 'vpc ' || creator === 'qemu') expect(reader.notes[0]).toMatch(new RegExp(`current size is 10485760 bytes .* ${chs} bytes are taken, by the CHS geometry`));
    else expect(reader.notes).toEqual([]);
    expect((await decodeAll(reader)).bytes.equals(qemuRaw(out, file('creator.raw'), 'vpc'))).toBe(true);
  });
});
