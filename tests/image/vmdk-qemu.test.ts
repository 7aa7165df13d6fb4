import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fileSink, streamSink } from '../../src/image/file-sink.js';
import { openImage, sniffFormat, writerFor } from '../../src/image/formats.js';
import { fileSource } from '../../src/image/byte-source.js';
import { scratchDir } from '../support/scratch.js';
import { decodeFile, haveQemu, modelContent, qemu, runsOfBuffer } from './vmdk-support.js';

const scratch = scratchDir('vmdk-qemu');
afterAll(() => scratch.cleanup());
let n = 0;
const file = (name: string): string => path.join(scratch.dir, `${n++}-${name}`);

/** 5 MiB + 1.5 KiB (the last grain is partial): data in a partial first grain, a run across a table boundary, a hole, explicit zeroes, a single sector. */
function sourceImage(): string {
  const raw = file('source.raw');
  qemu('qemu-img', ['create', '-q', '-f', 'raw', raw, String(5 * 1024 * 1024 + 1536)]);
  qemu('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 4096 100k', '-c', 'write -P 0xcd 2M 1536k', '-c', 'write -z 4M 64k', '-c', 'write -P 0x5a 5M 1536', '-c', 'write -P 0x77 1M 512', raw]);
  return raw;
}

/** The bytes qemu-img reads the image as. */
function qemuRaw(image: string): Buffer {
  const out = file('as.raw');
  qemu('qemu-img', ['convert', '-O', 'raw', image, out]);
  return fs.readFileSync(out);
}

describe.skipIf(!haveQemu())('VMDK against qemu-img', () => {
  const raw = sourceImage();
  const rawBytes = fs.readFileSync(raw);

  it.each(['monolithicSparse', 'streamOptimized'])('reads a %s image qemu-img made exactly, at offsets and front to back', async (subformat) => {
    const image = file(`qemu-${subformat}.vmdk`);
    qemu('qemu-img', ['convert', '-O', 'vmdk', '-o', `subformat=${subformat}`, raw, image]);
    const expected = qemuRaw(image);
    expect(expected.equals(rawBytes)).toBe(true);
    for (const how of ['file', 'stream'] as const) {
      const got = await decodeFile(image, how);
      expect(got.reader.subformat).toBe(subformat);
      expect(got.reader.virtualSize).toBe(rawBytes.length);
      expect(got.reader.backing).toBeNull();
      expect(got.bytes.equals(expected)).toBe(true);
      // Holes stay holes: nothing is reported for the unwritten 3.5 MiB..4 MiB range.
      expect(got.data.some(([o, l]) => o < 4 * 1024 * 1024 - 65536 && o + l > 3.5 * 1024 * 1024 + 65536)).toBe(false);
    }
    const s = fileSource(image);
    expect(await sniffFormat(s)).toBe('vmdk');
    await s.close();
  });

  it('reads zeroed-grain entries as zero ranges, in both subformats', async () => {
    for (const subformat of ['monolithicSparse', 'streamOptimized']) {
      const image = file(`zeroed-${subformat}.vmdk`);
      qemu('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat},zeroed_grain=on`, image, '4M']);
      const write = subformat === 'streamOptimized' ? 'write -c' : 'write';
      qemu('qemu-io', ['-f', 'vmdk', '-c', `${write} -P 0x42 0 64k`, '-c', 'write -z 1M 128k', '-c', `${write} -P 0x43 2M 64k`, image]);
      for (const how of ['file', 'stream'] as const) {
        const got = await decodeFile(image, how);
        expect(got.bytes.equals(qemuRaw(image))).toBe(true);
        expect(got.zero).toEqual([[1024 * 1024, 128 * 1024]]);
      }
    }
  });

  it('names the parent of a delta disk as its backing file', async () => {
    const base = file('base.vmdk');
    qemu('qemu-img', ['create', '-q', '-f', 'vmdk', base, '4M']);
    const delta = path.join(scratch.dir, 'delta.vmdk');
    qemu('qemu-img', ['create', '-q', '-f', 'vmdk', '-b', path.basename(base), '-F', 'vmdk', delta]);
    const got = await decodeFile(delta, 'file');
    expect(got.reader.backing).toEqual({ file: path.basename(base), format: 'vmdk' });
  });

  it.each([
    ['monolithicSparse', 'file'],
    ['streamOptimized', 'file'],
    ['streamOptimized', 'pipe'],
  ] as const)('writes %s to a %s that qemu-img checks and compares equal with the source', async (subformat, to) => {
    const image = file(`strata-${subformat}-${to}.vmdk`);
    const content = modelContent(rawBytes, runsOfBuffer(rawBytes));
    let result;
    if (to === 'file') {
      const fd = fs.openSync(image, 'w');
      try {
        result = await writerFor('vmdk')(content, fileSink(fd, image), { subformat });
      } finally {
        fs.closeSync(fd);
      }
    } else {
      const out = fs.createWriteStream(image);
      result = await writerFor('vmdk')(content, streamSink(out, image), { subformat });
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    }
    expect(result.fileSize).toBe(fs.statSync(image).size);
    qemu('qemu-img', ['check', '-f', 'vmdk', image]);
    qemu('qemu-img', ['compare', '-f', 'vmdk', '-F', 'raw', image, raw]);
    const info = JSON.parse(qemu('qemu-img', ['info', '--output=json', image])) as { 'virtual-size': number; 'format-specific': { data: { 'create-type': string } } };
    expect(info['format-specific'].data['create-type']).toBe(subformat);
    expect(info['virtual-size']).toBe(rawBytes.length);
    // The zero run and the hole are not stored: 1.5 MiB + 100 KiB + two sectors of data, in 64 KiB grains.
    expect(result.dataBytes).toBe(24 * 65536 + 1536 + 2 * 65536 + 65536);
    const back = await openImage(fileSource(image));
    expect(back.subformat).toBe(subformat);
  });
});
