import fs from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fileSource } from '../../src/image/byte-source.js';
import { ImageFormatError } from '../../src/image/errors.js';
import { structureChecksum } from '../../src/image/vhdx/crc32c.js';
import { guidBytes, PARENT_LOCATOR } from '../../src/image/vhdx/guid.js';
import { openVhdx } from '../../src/image/vhdx/reader.js';
import { hasTool } from '../nbd/support.js';
import { propertyRuns } from '../support/scratch.js';
import { decodeAll, refusal } from './support/decode.js';
import { qemu, qemuImage, qemuRaw } from './support/qemu.js';
import { expectReadsAsQemu } from './support/qemu-reads.js';
import { scratchFiles } from './support/scratch-files.js';
import { bufferSource } from './support/sources.js';

const file = scratchFiles('vhdx');

/** A VHDX qemu-img made, written by qemu-io: data in the first and a middle block, a zeroed range, data at the very end. */
const qemuVhdx = (size: string, options: string[]): string =>
  qemuImage('vhdx', file('disk.vhdx'), size, options, (virtual) => [
    ['-P', '0x11', '0', '64k'],
    ['-P', '0x22', '3m', '1536k'],
    ['-z', '5m', '64k'],
    ['-P', '0x44', String(virtual - 4096), '4096'],
  ]);

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
    ['dynamic, zero blocks', '24M', []],
    ['dynamic, absent blocks, 1 MiB blocks', '12M', ['-o', 'block_state_zero=off,block_size=1M']],
    ['dynamic, a size that is not whole blocks', '10000k', []],
    ['fixed', '9M', ['-o', 'subformat=fixed,block_size=1M']],
    ['dynamic, 32 MiB blocks (read in pieces)', '40M', ['-o', 'block_size=32M,block_state_zero=off']],
  ];

  it.each(cases)('%s: reads exactly what qemu-img converts, from a file and from a stream', async (_what, size, options) => {
    await expectReadsAsQemu(qemuVhdx(size, options), 'vhdx', 'vhdx', options.join(' ').includes('fixed') ? 'fixed' : 'dynamic', file('expected.raw'));
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

  it('finds blocks past the first chunk, whose BAT entries follow a sector bitmap entry', async () => {
    // 1 MiB blocks of 512-byte sectors: a sector bitmap entry after every 4096 payload entries.
    const img = qemuImage('vhdx', file('big.vhdx'), '5G', ['-o', 'block_size=1M'], () => [
      ['-P', '0x61', '4095m', '4k'],
      ['-P', '0x62', '4096m', '4k'],
      ['-P', '0x63', '5119m', '4k'],
    ]);
    const seen: [number, number, number][] = [];
    const reader = await openVhdx(fileSource(img));
    await reader.decode({
      data: async (offset, buf) => {
        seen.push([offset, buf.length, buf[0]!]);
      },
      zero: async () => undefined,
    });
    expect(seen).toEqual([
      [4095 * 1024 * 1024, 1 << 20, 0x61],
      [4096 * 1024 * 1024, 1 << 20, 0x62],
      [5119 * 1024 * 1024, 1 << 20, 0x63],
    ]);
  });

  describe('hostile and unsupported VHDXs', () => {
    let base: Buffer;
    const fresh = (): Buffer => {
      base ??= fs.readFileSync(qemuVhdx('16M', ['-o', 'block_size=1M']));
      return Buffer.from(base);
    };
    const open = (img: Buffer): ReturnType<typeof openVhdx> => openVhdx(bufferSource(img, 'hostile.vhdx'));
    const failure = (img: Buffer): Promise<Error> => refusal(() => open(img));

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

    it('a differencing VHDX is refused, naming its parent', async () => {
      const img = fresh();
      const md = metadataOf(img);
      // The file parameters item comes first in qemu's table; its flags follow the block size.
      const params = md + img.readUInt32LE(md + 32 + 16);
      img.writeUInt32LE(2, params + 4);
      expect((await failure(img)).message).toMatch(/a differencing VHDX \(it has a parent; .*\) is not supported/);
      // A parent locator item: one key/value pair, the relative path.
      const key = Buffer.from('relative_path', 'utf16le');
      const value = Buffer.from('.\\base\\parent.vhdx', 'utf16le');
      const locator = Buffer.alloc(32 + key.length + value.length);
      locator.writeUInt16LE(1, 18);
      locator.writeUInt32LE(32, 20);
      locator.writeUInt32LE(32 + key.length, 24);
      locator.writeUInt16LE(key.length, 28);
      locator.writeUInt16LE(value.length, 30);
      key.copy(locator, 32);
      value.copy(locator, 32 + key.length);
      const count = img.readUInt16LE(md + 10);
      const entry = md + 32 + 32 * count;
      guidBytes(PARENT_LOCATOR).copy(img, entry);
      img.writeUInt32LE(128 * KIB, entry + 16);
      img.writeUInt32LE(locator.length, entry + 20);
      img.writeUInt32LE(4, entry + 24);
      locator.copy(img, md + 128 * KIB);
      img.writeUInt16LE(count + 1, md + 10);
      expect((await failure(img)).message).toMatch(/a differencing VHDX \(it has a parent, \.\/base\/parent\.vhdx; qemu-img convert it to a whole image first\) is not supported/);
    });

    it('a disk of 4096-byte logical sectors reads the same (qemu-img reads only 512-byte ones)', async () => {
      const img = fresh();
      const f = file('512.vhdx');
      fs.writeFileSync(f, img);
      const expected = qemuRaw(f, file('512.raw'), 'vhdx');
      const md = metadataOf(img);
      const count = img.readUInt16LE(md + 10);
      for (let i = 0; i < count; i++) {
        const e = md + 32 + 32 * i;
        if (img.readUInt32LE(e) === 0x8141bf1d) img.writeUInt32LE(4096, md + img.readUInt32LE(e + 16));
      }
      const reader = await open(img);
      expect(reader.virtualSize).toBe(16 << 20);
      expect((await decodeAll(reader)).bytes.equals(expected)).toBe(true);
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
