import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fileSource, streamSource } from '../../src/image/byte-source.js';
import { openImage, sniffFormat } from '../../src/image/formats.js';
import { hasTool } from '../nbd/support.js';
import { decodeAll, qemu, qemuImage, qemuRaw, qemuSize, scratchFiles } from './vhd-support.js';

const file = scratchFiles('vhd');

/** A VHD qemu-img made, written by qemu-io: data, a zeroed range, holes, data at the very end. */
const qemuVhd = (size: string, options: string[]): string =>
  qemuImage('vpc', file('disk.vhd'), size, options, (virtual) => [
    ['-P', '0x11', '0', '64k'],
    ['-P', '0x22', '1536k', '1m'],
    ['-P', '0x33', '4097k', '3k'],
    ['-z', '1600k', '100k'],
    ['-P', '0x44', String(virtual - 8192), '8192'],
  ]);

describe.skipIf(!hasTool('qemu-img'))('VHD images qemu-img made', () => {
  const cases: [string, string, string[]][] = [
    ['dynamic, a size CHS rounds up', '10M', []],
    ['dynamic, a CHS-exact size', `${17 * 4 * 1000 * 512}`, []],
    ['dynamic, force_size (creator qem2)', '9M', ['-o', 'force_size=on']],
    ['fixed, a size CHS rounds up', '10M', ['-o', 'subformat=fixed']],
    ['fixed, force_size', '9M', ['-o', 'subformat=fixed,force_size=on']],
  ];

  it.each(cases)('%s: reads exactly what qemu-img converts, at the size qemu-img shows, from a file and from a stream', async (_what, size, options) => {
    const img = qemuVhd(size, options);
    const expected = qemuRaw(img, 'vpc', file('expected.raw'));
    const source = fileSource(img);
    expect(await sniffFormat(source)).toBe('vhd');
    const reader = await openImage(source);
    expect(reader.format).toBe('vhd');
    expect(reader.subformat).toBe(options.join(' ').includes('fixed') ? 'fixed' : 'dynamic');
    expect(reader.virtualSize).toBe(qemuSize(img, 'vpc'));
    expect((await decodeAll(reader)).bytes.equals(expected)).toBe(true);
    await source.close();
    // Front to back, as a member of a package arrives.
    const stream = streamSource(fs.createReadStream(img, { highWaterMark: 256 * 1024 }), 'disk.vhd in a stream', fs.statSync(img).size);
    const streamed = await openImage(stream, 'vhd');
    expect(streamed.virtualSize).toBe(expected.length);
    expect((await decodeAll(streamed)).bytes.equals(expected)).toBe(true);
    await stream.close();
  });

  it('leaves unallocated blocks unreported', async () => {
    const img = file('sparse.vhd');
    qemu('qemu-img', ['create', '-q', '-f', 'vpc', img, '64M']);
    qemu('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x5a 20m 4k', img]);
    const source = fileSource(img);
    const got = await decodeAll(await openImage(source));
    const reported = got.data.reduce((sum, [, l]) => sum + l, 0);
    // One 2 MiB block holds the write; the rest of the disk is never reported.
    expect(reported).toBe(2 * 1024 * 1024);
    expect(got.bytes.subarray(20 << 20, (20 << 20) + 4096).every((b) => b === 0x5a)).toBe(true);
    await source.close();
  });
});
