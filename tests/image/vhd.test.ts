import { describe, expect, it } from 'vitest';
import { fileSource } from '../../src/image/byte-source.js';
import { openImage } from '../../src/image/formats.js';
import { hasTool } from '../nbd/support.js';
import { decodeAll } from './support/decode.js';
import { qemu, qemuImage } from './support/qemu.js';
import { expectReadsAsQemu } from './support/qemu-reads.js';
import { scratchFiles } from './support/scratch-files.js';

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
    await expectReadsAsQemu(qemuVhd(size, options), 'vpc', 'vhd', options.join(' ').includes('fixed') ? 'fixed' : 'dynamic', file('expected.raw'));
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
