import fc from 'fast-check';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { ByteSource } from '../../src/image/byte-source.js';
import { ImageFormatError, UnsupportedImageError } from '../../src/image/errors.js';
import { parseHeader } from '../../src/image/vmdk/header.js';
import { openVmdk } from '../../src/image/vmdk/reader.js';
import { writeVmdk } from '../../src/image/vmdk/writer.js';
import { propertyRuns } from '../support/scratch.js';
import { bufferContent } from './support/content.js';
import { decodeAll } from './support/decode.js';
import { memoryByteSink } from './support/sinks.js';
import { bufferSource, bufferStream } from './support/sources.js';

const GRAIN = 65536;
const MiB = 1024 * 1024;

/** A 4 MiB disk with random data in grains 0, 1 and 5 (so each compresses to most of a grain). */
function disk(): Buffer {
  const bytes = Buffer.alloc(4 * MiB);
  let x = 12345;
  for (const g of [0, 1, 5]) {
    for (let i = g * GRAIN; i < (g + 1) * GRAIN; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      bytes[i] = x >>> 24;
    }
  }
  return bytes;
}

async function image(subformat: 'monolithicSparse' | 'streamOptimized'): Promise<Buffer> {
  const bytes = disk();
  const sink = memoryByteSink('disk.vmdk', true);
  await writeVmdk(bufferContent(bytes, [{ offset: 0, length: bytes.length, kind: 'data' }]), sink, { subformat });
  return Buffer.from(sink.bytes());
}

type How = 'file' | 'stream' | 'pipe';
const sources = (img: Buffer, how: How[]): ByteSource[] =>
  how.map((h) => (h === 'file' ? bufferSource(img, 'bad.vmdk') : bufferStream(img, 4000, 'bad.vmdk', h === 'stream' ? img.length : null)));

/** Opening and decoding `img` fails with `kind`, its message matching `re`, from every kind of source asked. */
async function refused(img: Buffer, re: RegExp, how: How[] = ['file', 'stream', 'pipe'], kind: typeof ImageFormatError | typeof UnsupportedImageError = ImageFormatError): Promise<void> {
  for (const source of sources(img, how)) {
    const attempt = (async () => decodeAll(await openVmdk(source)))();
    await expect(attempt, `from a ${source.seekable ? 'file' : 'stream'}`).rejects.toThrow(re);
    await expect(attempt).rejects.toBeInstanceOf(kind);
  }
}

/** Where the tables of a monolithicSparse image are. */
function sparseTables(img: Buffer): { gd: number; gt: number } {
  const h = parseHeader(img, 'x', 0);
  const gt = img.readUInt32LE(h.gdOffset * 512) * 512;
  return { gd: h.gdOffset * 512, gt };
}

/** Where the footer, directory and first table of a streamOptimized image are. */
function streamTables(img: Buffer): { footer: number; gd: number; gt: number } {
  const footer = img.length - 1024;
  const gd = parseHeader(img.subarray(footer), 'x', footer).gdOffset * 512;
  return { footer, gd, gt: img.readUInt32LE(gd) * 512 };
}

/** Rewrites the embedded descriptor's text. */
function editDescriptor(img: Buffer, edit: (text: string) => string): void {
  const text = edit(img.toString('latin1', 512, 512 * 21).split('\0')[0]!);
  img.fill(0, 512, 512 * 21);
  img.write(text, 512, 'latin1');
}

/** Sets the capacity in the header (and the footer, if any) and in the descriptor's extent line. */
function setCapacity(img: Buffer, sectors: bigint, footer?: number): void {
  img.writeBigUInt64LE(sectors, 12);
  if (footer !== undefined) img.writeBigUInt64LE(sectors, footer + 12);
  editDescriptor(img, (t) => t.replace(/RW \d+ SPARSE/, `RW ${sectors} SPARSE`));
}

describe('hostile VMDK images are refused with the place named, never a hang or an unbounded allocation', () => {
  it('a cut anywhere', async () => {
    const images = { monolithicSparse: await image('monolithicSparse'), streamOptimized: await image('streamOptimized') };
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<'monolithicSparse' | 'streamOptimized'>('monolithicSparse', 'streamOptimized'), fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom<How>('file', 'stream', 'pipe'), async (sub, where, how) => {
        const full = images[sub];
        const cut = full.subarray(0, Math.min(full.length - 1, Math.floor(where * full.length)));
        await refused(cut, /./, [how]);
      }),
      { numRuns: propertyRuns(80, 30) },
    );
  });

  it('no KDMV magic', async () => {
    const img = await image('monolithicSparse');
    img.write('XDMV', 0, 'latin1');
    await refused(img, /bad\.vmdk: no KDMV magic: not a VMDK sparse extent \(at offset 0\)/);
  });

  it('line ends rewritten by a text-mode transfer', async () => {
    const img = await image('streamOptimized');
    img.write('\n\n', 75, 'latin1');
    await refused(img, /text-mode transfer .*\(at offset 73\)/);
  });

  it('a grain past the end of the file', async () => {
    const img = await image('monolithicSparse');
    img.writeUInt32LE(100_000, sparseTables(img).gt + 5 * 4);
    await refused(img, /the grain for LBA 640 ends at \d+, past the end of the file \(\d+ bytes\)/, ['file', 'stream']);
    await refused(img, /the file ends inside the grain for LBA 640 \(0 of its 65536 bytes are there\)/, ['pipe']);
  });

  it('tables and grains pointing at the header, the descriptor or the directory', async () => {
    const gdAtDescriptor = await image('monolithicSparse');
    gdAtDescriptor.writeUInt32LE(1, sparseTables(gdAtDescriptor).gd);
    await refused(gdAtDescriptor, /grain table 0 overlaps the embedded descriptor/);
    // An entry of 1 means "zero" only where the zeroed-grain flag says so; elsewhere it is sector 1.
    const grainAtDescriptor = await image('monolithicSparse');
    grainAtDescriptor.writeUInt32LE(1, sparseTables(grainAtDescriptor).gt + 4);
    await refused(grainAtDescriptor, /the grain for LBA 128 overlaps the embedded descriptor/);
    const grainAtDirectory = await image('monolithicSparse');
    const t = sparseTables(grainAtDirectory);
    grainAtDirectory.writeUInt32LE(t.gd / 512, t.gt + 4);
    await refused(grainAtDirectory, /the grain for LBA 128 overlaps a grain table or the grain directory/);
  });

  it('one grain claimed by two entries', async () => {
    const img = await image('monolithicSparse');
    const { gt } = sparseTables(img);
    img.writeUInt32LE(img.readUInt32LE(gt), gt + 5 * 4);
    await refused(img, /overlaps the grain before it \(two grain table entries share its sectors\)/);
  });

  it('a capacity far beyond the file', async () => {
    const sparse = await image('monolithicSparse');
    setCapacity(sparse, 1n << 34n);
    await refused(sparse, /the grain directory ends at \d+, past the end of the file/, ['file', 'stream']);
    await refused(sparse, /the file ends inside the grain directory \(\d+ of its 1048576 bytes are there\)/, ['pipe']);
    const stream = await image('streamOptimized');
    setCapacity(stream, 1n << 34n, streamTables(stream).footer);
    await refused(stream, /a grain directory marker of 1 sectors, less than the directory's 1048576 bytes/);
    const huge = await image('streamOptimized');
    setCapacity(huge, 1n << 40n, streamTables(huge).footer);
    await refused(huge, /a capacity of 1099511627776 sectors in grains of 128 needs 16777216 grain tables, more than the 1048576 believed \(at offset 12\)/);
    const past = await image('monolithicSparse');
    past.writeBigUInt64LE(1n << 62n, 12);
    await refused(past, /capacity 4611686018427387904 is out of range \(at offset 12\)/);
  });

  it('a compressed grain that does not inflate, or inflates past a grain', async () => {
    const broken = await image('streamOptimized');
    broken.fill(0x55, GRAIN + 12, GRAIN + 40);
    await refused(broken, /the compressed grain for LBA 0 does not inflate \(.*\) \(at offset 65536\)/);
    const bomb = await image('streamOptimized');
    // The marker keeps its size, so the stream goes on where it did; what follows the deflate stream is ignored.
    zlib.deflateSync(Buffer.alloc(4 * MiB)).copy(bomb, GRAIN + 12);
    await refused(bomb, /the compressed grain for LBA 0 inflates to more than a grain \(65536 bytes\)/);
  });

  it('markers that lie', async () => {
    const huge = await image('streamOptimized');
    huge.writeUInt32LE(0xfffffff0, GRAIN + 8);
    await refused(huge, /the grain for LBA 0 claims 4294967280 compressed bytes/);
    const far = await image('streamOptimized');
    far.writeBigUInt64LE(1n << 40n, streamTables(far).gt - 512);
    await refused(far, /the stream ends before its end-of-stream marker/);
    const unknown = await image('streamOptimized');
    unknown.writeUInt32LE(7, streamTables(unknown).gt - 512 + 12);
    await refused(unknown, /a marker of unknown type 7/);
    const skewed = await image('streamOptimized');
    skewed.writeBigUInt64LE(129n, GRAIN);
    await refused(skewed, /a grain marker at LBA 129, not a grain boundary/);
    const twice = await image('streamOptimized');
    const second = GRAIN + Math.ceil((12 + twice.readUInt32LE(GRAIN + 8)) / 512) * 512;
    twice.writeBigUInt64LE(0n, second);
    await refused(twice, /a second grain for LBA 0/);
  });

  it('tables that do not match the grains of a stream', async () => {
    const nowhere = await image('streamOptimized');
    nowhere.writeUInt32LE(200, streamTables(nowhere).gt + 4);
    await refused(nowhere, /grain table entry 1 points at sector 200, where the stream has no grain/);
    const orphan = await image('streamOptimized');
    orphan.writeUInt32LE(0, streamTables(orphan).gt + 4);
    await refused(orphan, /the grain for LBA 128 is in no grain table/);
    const moved = await image('streamOptimized');
    const t = streamTables(moved);
    moved.writeUInt32LE(moved.readUInt32LE(t.gt + 4), t.gt + 8);
    moved.writeUInt32LE(0, t.gt + 4);
    await refused(moved, /grain table entry 2 points at the grain for LBA 128, which another entry must map/);
    const footer = await image('streamOptimized');
    const f = streamTables(footer).footer;
    footer.writeBigUInt64LE(BigInt(footer.readBigUInt64LE(f + 56)) + 1n, f + 56);
    await refused(footer, /the footer's grain directory \(sector \d+\) is not the one the stream holds/);
  });

  it('formats and features that are not read, by name', async () => {
    const cowd = Buffer.alloc(4096);
    cowd.write('COWD', 0, 'latin1');
    await refused(cowd, /the COWD sparse extent of ESX Server \(vmfsSparse\) is not supported/, ['file', 'pipe'], UnsupportedImageError);
    const descriptor = Buffer.from('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\nRW 8192 FLAT "disk-flat.vmdk" 0\n');
    await refused(descriptor, /a VMDK descriptor file \(createType "monolithicFlat"\) whose data lies in separate extent files \(disk-flat\.vmdk\)/, ['file', 'pipe'], UnsupportedImageError);
    const v4 = await image('monolithicSparse');
    v4.writeUInt32LE(4, 4);
    await refused(v4, /version 4 of the VMDK sparse extent is not supported/, ['file'], UnsupportedImageError);
    const bare = await image('monolithicSparse');
    bare.writeBigUInt64LE(0n, 28);
    await refused(bare, /a sparse extent without an embedded descriptor/, ['file'], UnsupportedImageError);
    const split = await image('monolithicSparse');
    editDescriptor(split, (t) => t.replace('monolithicSparse', 'twoGbMaxExtentSparse'));
    await refused(split, /createType "twoGbMaxExtentSparse"/, ['file'], UnsupportedImageError);
    const unmarked = await image('streamOptimized');
    unmarked.writeUInt32LE(unmarked.readUInt32LE(8) & ~(1 << 17), 8);
    await refused(unmarked, /compressed grains without grain markers is not supported/, ['file'], UnsupportedImageError);
    const atEnd = await image('monolithicSparse');
    atEnd.writeBigUInt64LE(0xffffffffffffffffn, 56);
    await refused(atEnd, /a grain directory at the end of an extent without compressed grains and markers is not supported/, ['file'], UnsupportedImageError);
    const parentless = await image('monolithicSparse');
    editDescriptor(parentless, (t) => t.replace('parentCID=ffffffff', 'parentCID=0badf00d'));
    await refused(parentless, /names a parent \(parentCID 0badf00d\) but no parentFileNameHint/, ['file']);
  });
});
