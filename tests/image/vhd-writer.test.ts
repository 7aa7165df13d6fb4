import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { Readable, Writable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fileSource, streamSource, type ByteSource } from '../../src/image/byte-source.js';
import { fileSink, streamSink } from '../../src/image/file-sink.js';
import { UnsupportedImageError } from '../../src/image/errors.js';
import { openImage, writerFor } from '../../src/image/formats.js';
import type { ImageContent } from '../../src/image/image-writer.js';
import { hasTool } from '../nbd/support.js';
import { propertyRuns } from '../support/scratch.js';
import { bufferContent, runsOf } from './support/content.js';
import { decodeAll } from './support/decode.js';
import { qemu, qemuCompare, qemuSize } from './support/qemu.js';
import { scratchFiles } from './support/scratch-files.js';

const file = scratchFiles('vhd-writer');
type Written = 'vhd' | 'vhdx';

async function toFile(content: ImageContent, subformat: string, format: Written = 'vhd'): Promise<{ out: string; fileSize: number; dataBytes: number }> {
  const out = file(`out-${subformat}.${format}`);
  const fd = fs.openSync(out, 'w');
  try {
    const r = await writerFor(format)(content, fileSink(fd, out), { subformat });
    return { out, ...r };
  } finally {
    fs.closeSync(fd);
  }
}

async function toBytes(content: ImageContent, subformat: string, format: Written): Promise<Buffer> {
  const parts: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      parts.push(Buffer.from(chunk));
      done();
    },
  });
  await writerFor(format)(content, streamSink(out, 'stdout'), { subformat });
  return Buffer.concat(parts);
}

/** A disk of `size` bytes with `writes` (offset, length, byte) applied. */
function disk(size: number, writes: [number, number, number][]): Buffer {
  const bytes = Buffer.alloc(size);
  for (const [o, l, b] of writes) bytes.fill(b, Math.max(0, Math.min(o, size)), Math.max(0, Math.min(o + l, size)));
  return bytes;
}

/** Data at the start, across the second block boundary and at the very end; also as a raw file for qemu-img compare. */
function sample(size: number): { bytes: Buffer; raw: string } {
  const bytes = disk(size, [
    [0, 4096, 0x11],
    [(3 << 20) - 512, 8192, 0x22],
    [size - 1024, 1024, 0x33],
  ]);
  const raw = file('content.raw');
  fs.writeFileSync(raw, bytes);
  return { bytes, raw };
}

describe('the VHD and VHDX writers', () => {
  it('write what the readers read back, to a file or front to back to a stream (property)', async () => {
    const sizes = fc.oneof(fc.integer({ min: 1, max: 14000 }).map((s) => s * 512), fc.constant(17 * 4 * 1000 * 512));
    await fc.assert(
      fc.asyncProperty(
        sizes,
        fc.array(fc.tuple(fc.nat(40 << 20), fc.integer({ min: 1, max: 3 << 20 }), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.constantFrom<[Written, string]>(['vhd', 'dynamic'], ['vhd', 'fixed'], ['vhdx', 'dynamic'], ['vhdx', 'fixed']),
        fc.boolean(),
        fc.boolean(),
        async (size, writes, [format, subformat], toStream, zeroRuns) => {
          const bytes = disk(size, writes.map(([o, l, b]) => [o % size, l, b]));
          const content = bufferContent(bytes, runsOf(bytes, 4096, (at) => zeroRuns && at % 8192 === 0));
          let source: ByteSource;
          if (toStream) {
            const image = await toBytes(content, subformat, format);
            source = streamSource(Readable.from([image]), `piped.${format}`, image.length);
          } else source = fileSource((await toFile(content, subformat, format)).out);
          const reader = await openImage(source, format);
          expect(reader.virtualSize).toBe(size);
          expect(reader.subformat).toBe(subformat);
          expect((await decodeAll(reader)).bytes.equals(bytes)).toBe(true);
          await source.close();
        },
      ),
      { numRuns: propertyRuns(40, 15) },
    );
  });

  it('allocate only the blocks that hold data', async () => {
    const bytes = disk(64 << 20, [[(20 << 20) + 4096, 4096, 0x5a]]);
    const r = await toFile(bufferContent(bytes, runsOf(bytes, 65536)), 'dynamic');
    // Footer copy, header, BAT (32 entries, one sector), one block of bitmap and 2 MiB, footer.
    expect(r.fileSize).toBe(512 + 1024 + 512 + 512 + (2 << 20) + 512);
    expect(r.dataBytes).toBe(64 * 1024);
    const x = await toFile(bufferContent(bytes, runsOf(bytes, 65536)), 'dynamic', 'vhdx');
    // Header section, log, metadata, BAT (one MiB each), one 2 MiB block.
    expect(x.fileSize).toBe(6 << 20);
    expect(x.dataBytes).toBe(64 * 1024);
  });

  it('refuses sizes a VHD cannot hold and subformats it does not write', async () => {
    await expect(toFile(bufferContent(Buffer.alloc(1000)), 'dynamic')).rejects.toThrow(UnsupportedImageError);
    await expect(toFile(bufferContent(Buffer.alloc(1000)), 'dynamic')).rejects.toThrow(/1000 bytes \(a VHD holds whole 512-byte sectors\)/);
    await expect(toFile(bufferContent(Buffer.alloc(512)), 'differencing')).rejects.toThrow(/subformat "differencing"/);
    const huge: ImageContent = { size: 2041 * 2 ** 30, runs: async function* () {}, read: async () => undefined };
    await expect(toFile(huge, 'dynamic')).rejects.toThrow(/2040 GiB at most/);
    await expect(toFile(bufferContent(Buffer.alloc(1000)), 'dynamic', 'vhdx')).rejects.toThrow(/a VHDX of 1000 bytes \(whole 512-byte sectors/);
    await expect(toFile(bufferContent(Buffer.alloc(512)), 'differencing', 'vhdx')).rejects.toThrow(/VHDX subformat "differencing" \(dynamic and fixed are written\)/);
  });
});

describe.skipIf(!hasTool('qemu-img'))('the VHD writer, checked by qemu-img', () => {
  const sizes: [string, number][] = [
    ['a CHS-exact size (creator qemu)', 17 * 4 * 1000 * 512],
    ['a size no geometry holds (creator qem2)', 10 * 1024 * 1024],
    ['an odd number of sectors', 9 * 1024 * 1024 + 512],
    ['one sector', 512],
  ];
  const cases = sizes.flatMap(([what, size]) => [
    [`dynamic, ${what}`, 'dynamic', size] as const,
    [`fixed, ${what}`, 'fixed', size] as const,
  ]);

  it.each(cases)('%s: qemu-img shows exactly the size and compares it equal', async (_what, subformat, size) => {
    const { bytes, raw } = sample(size);
    const { out } = await toFile(bufferContent(bytes, runsOf(bytes, 4096)), subformat);
    expect(qemuSize(out, 'vpc')).toBe(size);
    qemuCompare(out, 'vpc', raw);
    // qemu-img has no checks for vpc; it must say so rather than find errors.
    const check = spawnSync('qemu-img', ['check', '-f', 'vpc', out], { encoding: 'utf8' });
    expect(check.status === 0 || /does not support checks/.test(check.stderr)).toBe(true);
  });
});

describe.skipIf(!hasTool('qemu-img'))('the VHDX writer, checked by qemu-img', () => {
  it.each([
    ['dynamic, whole blocks', 'dynamic', 8 << 20],
    ['dynamic, a size that ends inside a block', 'dynamic', 37 * 1024 * 1024 + 512],
    ['fixed, a size that ends inside a block', 'fixed', 9 * 1024 * 1024 + 512],
  ])('%s: passes qemu-img check, shows exactly the size and compares equal', async (_what, subformat, size) => {
    const { bytes, raw } = sample(size);
    const { out, fileSize } = await toFile(bufferContent(bytes, runsOf(bytes, 4096, (at) => at % (4 << 20) === 1 << 20)), subformat, 'vhdx');
    // Header section, log, metadata, BAT, then blocks: a fixed file holds every block.
    if (subformat === 'fixed') expect(fileSize).toBe((4 << 20) + Math.ceil(size / (2 << 20)) * (2 << 20));
    expect(qemu('qemu-img', ['check', '-f', 'vhdx', out])).toMatch(/No errors were found on the image/);
    expect(qemuSize(out, 'vhdx')).toBe(size);
    qemuCompare(out, 'vhdx', raw);
  });
});
