import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { fileSource, streamSource } from '../../src/image/byte-source.js';
import { ImageFormatError, UnsupportedImageError } from '../../src/image/errors.js';
import { openImage, sniffFormat } from '../../src/image/formats.js';
import { structureChecksum } from '../../src/image/vhdx/crc32c.js';
import { openVhdx } from '../../src/image/vhdx/reader.js';
import { hasTool } from '../nbd/support.js';
import { propertyRuns, scratchDir } from '../support/scratch.js';
import { bufferSource, decodeAll, qemu, qemuRaw, qemuSize } from './vhd-support.js';

const scratch = scratchDir('vhdx');
afterAll(() => scratch.cleanup());
let n = 0;
const file = (name: string): string => path.join(scratch.dir, `${n++}-${name}`);

/** A VHDX qemu-img made, written by qemu-io: data in the first and a middle block, a zeroed range, data at the very end. */
function qemuVhdx(size: string, options: string[]): string {
  const img = file('disk.vhdx');
  qemu('qemu-img', ['create', '-q', '-f', 'vhdx', ...options, img, size]);
  const virtual = qemuSize(img, 'vhdx');
  for (const w of [['-P', '0x11', '0', '64k'], ['-P', '0x22', '3m', '1536k'], ['-z', '5m', '64k'], ['-P', '0x44', String(virtual - 4096), '4096']]) {
    qemu('qemu-io', ['-f', 'vhdx', '-c', `write ${w.join(' ')}`, img]);
  }
  return img;
}

const KIB = 1024;
/** Fixes the CRC-32C of the header or region table at `at` (`length` bytes). */
const fixCrc = (img: Buffer, at: number, length: number): number => img.writeUInt32LE(structureChecksum(img.subarray(at, at + length)), at + 4);
/** File offset of the region whose GUID starts with `prefix` (its first field, little-endian). */
function regionOffset(img: Buffer, first: number): number {
  const t = 192 * KIB;
  for (let i = 0; i < img.readUInt32LE(t + 8); i++) if (img.readUInt32LE(t + 16 + 32 * i) === first) return Number(img.readBigUInt64LE(t + 32 + 32 * i));
  throw new Error('no such region');
}
const batOf = (img: Buffer): number => regionOffset(img, 0x2dc27766);
const metadataOf = (img: Buffer): number => regionOffset(img, 0x8b7ca206);
/** The current header: the one with the higher sequence number. */
const currentHeader = (img: Buffer): number => (img.readBigUInt64LE(128 * KIB + 8) > img.readBigUInt64LE(64 * KIB + 8) ? 128 * KIB : 64 * KIB);

describe.skipIf(!hasTool('qemu-img'))('VHDX images qemu-img made', () => {
  const cases: [string, string, string[]][] = [
    ['dynamic, zero blocks', '40M', []],
    ['dynamic, absent blocks, 1 MiB blocks', '12M', ['-o', 'block_state_zero=off,block_size=1M']],
    ['dynamic, a size that is not whole blocks', '10000k', []],
    ['fixed', '9M', ['-o', 'subformat=fixed,block_size=1M']],
  ];

  it.each(cases)('%s: reads exactly what qemu-img converts, from a file and from a stream', async (_what, size, options) => {
    const img = qemuVhdx(size, options);
    const expected = qemuRaw(img, 'vhdx', file('expected.raw'));
    const source = fileSource(img);
    expect(await sniffFormat(source)).toBe('vhdx');
    const reader = await openImage(source);
    expect(reader.virtualSize).toBe(qemuSize(img, 'vhdx'));
    expect((await decodeAll(reader)).bytes.equals(expected)).toBe(true);
    await source.close();
    const stream = streamSource(fs.createReadStream(img, { highWaterMark: 256 * KIB }), 'disk.vhdx in a stream', fs.statSync(img).size);
    expect((await decodeAll(await openImage(stream, 'vhdx'))).bytes.equals(expected)).toBe(true);
    await stream.close();
  });

  it('reports zero blocks as zeroes and reads only present blocks', async () => {
    const img = file('sparse.vhdx');
    qemu('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', img, '64M']);
    qemu('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x5a 20m 4k', img]);
    const got = await decodeAll(await openVhdx(fileSource(img)));
    expect(got.data).toEqual([[20 << 20, 1 << 20]]);
    expect(got.zero).toEqual([
      [0, 20 << 20],
      [21 << 20, 43 << 20],
    ]);
  });

  describe('hostile and unsupported VHDXs', () => {
    let base: Buffer;
    const fresh = (): Buffer => {
      base ??= fs.readFileSync(qemuVhdx('16M', ['-o', 'block_size=1M']));
      return Buffer.from(base);
    };
    const open = (img: Buffer): Promise<Awaited<ReturnType<typeof openVhdx>>> => {
      const f = file('hostile.vhdx');
      fs.writeFileSync(f, img);
      return openVhdx(fileSource(f));
    };
    async function failure(img: Buffer): Promise<Error> {
      try {
        await decodeAll(await open(img));
      } catch (err) {
        expect(err instanceof ImageFormatError || err instanceof UnsupportedImageError, String(err)).toBe(true);
        return err as Error;
      }
      throw new Error('the image was accepted');
    }

    it('one damaged header is survived, two are refused', async () => {
      const img = fresh();
      img[currentHeader(img) + 200] ^= 1;
      expect((await decodeAll(await open(img))).bytes.length).toBe(16 << 20);
      img[(currentHeader(img) === 64 * KIB ? 128 : 64) * KIB + 200] ^= 1;
      expect((await failure(img)).message).toMatch(/neither VHDX header is valid \(signature or CRC-32C checksum\) \(at offset 65536\)/);
    });

    it('damaged region tables are refused', async () => {
      const img = fresh();
      img[192 * KIB + 100] ^= 1;
      img[256 * KIB + 100] ^= 1;
      expect((await failure(img)).message).toMatch(/neither VHDX region table is valid/);
    });

    it('a log that holds entries is refused, saying what to do', async () => {
      const img = fresh();
      const h = currentHeader(img);
      img.fill(0x5a, h + 48, h + 64);
      fixCrc(img, h, 4 * KIB);
      expect((await failure(img)).message).toMatch(/replaying the log of a VHDX that was not closed cleanly \(open it in Hyper-V, or run qemu-img check -r all on it, first\) is not supported/);
    });

    it('a differencing VHDX is refused', async () => {
      const img = fresh();
      const md = metadataOf(img);
      // The file parameters item comes first in qemu's table; its flags follow the block size.
      const params = md + img.readUInt32LE(md + 32 + 16);
      img.writeUInt32LE(2, params + 4);
      expect((await failure(img)).message).toMatch(/a differencing VHDX \(it has a parent; .*\) is not supported/);
    });

    it('a block past the end, over the metadata, or claimed twice', async () => {
      const img = fresh();
      const bat = batOf(img);
      const present = img.readUInt32LE(bat) >>> 20;
      img.writeUInt32LE(((Math.ceil(img.length / (1 << 20)) + 4) << 20) | 6, bat + 8);
      expect((await failure(img)).message).toMatch(/block 1 \(at file offset \d+\) ends past the end of the file/);
      const over = fresh();
      over.writeUInt32LE(((metadataOf(over) >> 20) << 20) | 6, bat + 8);
      expect((await failure(over)).message).toMatch(/block 1 .* overlaps the metadata region|the metadata region overlaps block 1/);
      const twice = fresh();
      twice.writeUInt32LE((present << 20) | 6, bat + 8 * 5);
      expect((await failure(twice)).message).toMatch(/overlaps block/);
    });

    it('a truncated file, and a block state only differencing disks have', async () => {
      const img = fresh();
      expect((await failure(img.subarray(0, img.length - 512 * KIB))).message).toMatch(/ends past the end of the file|the file ends inside/);
      const partial = fresh();
      partial.writeUInt32LE(7, batOf(partial) + 8 * 3);
      expect((await failure(partial)).message).toMatch(/block 3 is partially present, which only a differencing VHDX may be/);
    });

    it('any BAT either reads within the disk or is refused as damage (property)', async () => {
      const img = fresh();
      const bat = batOf(img);
      await fc.assert(
        fc.asyncProperty(fc.array(fc.tuple(fc.nat(17), fc.nat(40), fc.nat(7)), { minLength: 1, maxLength: 6 }), async (edits) => {
          const copy = Buffer.from(img);
          for (const [entry, mb, state] of edits) copy.writeUInt32LE(((mb << 20) | state) >>> 0, bat + entry * 8);
          try {
            const got = await decodeAll(await openVhdx(bufferSource(copy, 'fuzzed.vhdx')));
            expect(got.bytes.length).toBe(16 << 20);
          } catch (err) {
            expect(err instanceof ImageFormatError, String(err)).toBe(true);
          }
        }),
        { numRuns: propertyRuns(80, 20) },
      );
    });
  });
});
