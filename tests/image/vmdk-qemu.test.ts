import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { fileSink, streamSink } from '../../src/image/file-sink.js';
import { openImage, sniffFormat, writerFor } from '../../src/image/formats.js';
import { fileSource, streamSource } from '../../src/image/byte-source.js';
import { openVmdk } from '../../src/image/vmdk/reader.js';
import { hasTool } from '../nbd/support.js';
import { bufferContent } from './support/content.js';
import { decodeAll, decodeSource, type Decoded } from './support/decode.js';
import { haveQemu, qemu, qemuCompare, qemuRaw } from './support/qemu.js';
import { scratchFiles } from './support/scratch-files.js';
import { fileStream } from './support/sources.js';

const file = scratchFiles('vmdk-qemu');

/** Decodes the VMDK in `image` read at offsets, or front to back from a stream of it. */
const decodeFile = (image: string, how: 'file' | 'stream'): ReturnType<typeof decodeSource> => decodeSource(how === 'file' ? fileSource(image) : fileStream(image), openVmdk);

/** 40 MiB + 1.5 KiB (the last grain is partial): data in a partial first grain, a hole, explicit zeroes, a single sector, a write across the first grain table's end. */
function sourceImage(): string {
  const raw = file('source.raw');
  qemu('qemu-img', ['create', '-q', '-f', 'raw', raw, String(40 * 1024 * 1024 + 1536)]);
  qemu('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 4096 100k', '-c', 'write -P 0xcd 2M 1536k', '-c', 'write -z 4M 64k', '-c', 'write -P 0x5a 40M 1536', '-c', 'write -P 0x77 1M 512', '-c', 'write -P 0x66 32764k 8k', raw]);
  return raw;
}

describe.skipIf(!haveQemu())('VMDK against qemu-img', () => {
  const raw = sourceImage();
  const rawBytes = fs.readFileSync(raw);

  it.each(['monolithicSparse', 'streamOptimized'])('reads a %s image qemu-img made exactly, at offsets and front to back', async (subformat) => {
    const image = file(`qemu-${subformat}.vmdk`);
    qemu('qemu-img', ['convert', '-O', 'vmdk', '-o', `subformat=${subformat}`, raw, image]);
    const expected = qemuRaw(image, file('as.raw'));
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
        expect(got.bytes.equals(qemuRaw(image, file('as.raw')))).toBe(true);
        expect(got.zero).toEqual([[1024 * 1024, 128 * 1024]]);
      }
    }
  });

  it('refuses a compressed grain of a qemu-img image that does not inflate, naming its place', async () => {
    const image = file('broken.vmdk');
    qemu('qemu-img', ['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, image]);
    const bytes = fs.readFileSync(image);
    const first = 128 * 512;
    bytes.fill(0x55, first + 12, first + 40);
    fs.writeFileSync(image, bytes);
    for (const how of ['file', 'stream'] as const) await expect(decodeFile(image, how)).rejects.toThrow(/broken\.vmdk: the compressed grain for LBA 0 does not inflate \(.*\) \(at offset 65536\)/);
  });

  it.each(['monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat'])('refuses a %s disk (a descriptor file and separate extents) by name', async (subformat) => {
    const image = path.join(file.dir, `${subformat}.vmdk`);
    qemu('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, image, '4M']);
    await expect(decodeFile(image, 'file')).rejects.toThrow(new RegExp(`a VMDK descriptor file \\(createType "${subformat}"\\) whose data lies in separate extent files \\(${subformat}-[fs]`));
  });

  it.skipIf(!hasTool('tar'))('reads streamOptimized disks (qemu-img\'s and Strata\'s) from the members of a tar read once, front to back, as an OVA carries them', async () => {
    const dir = path.join(file.dir, 'ova');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'a.ovf'), '<Envelope/>');
    qemu('qemu-img', ['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, path.join(dir, 'qemu.vmdk')]);
    const fd = fs.openSync(path.join(dir, 'strata.vmdk'), 'w');
    await writerFor('vmdk')(bufferContent(rawBytes), fileSink(fd, 'strata.vmdk'), { subformat: 'streamOptimized' });
    fs.closeSync(fd);
    const archive = file('disks.ova');
    const made = spawnSync('tar', ['-cf', archive, '-C', dir, 'a.ovf', 'qemu.vmdk', 'strata.vmdk']);
    expect(made.status).toBe(0);
    const decoded = new Map<string, Decoded>();
    const extract = tar.extract();
    fs.createReadStream(archive).pipe(extract);
    for await (const entry of extract) {
      if (entry.header.name.endsWith('.vmdk')) decoded.set(entry.header.name, await decodeAll(await openVmdk(streamSource(Readable.from(entry), `${entry.header.name} in disks.ova`, entry.header.size))));
      entry.resume();
    }
    expect([...decoded.keys()]).toEqual(['qemu.vmdk', 'strata.vmdk']);
    for (const d of decoded.values()) expect(d.bytes.equals(rawBytes)).toBe(true);
  });

  it('names the parent of a delta disk as its backing file', async () => {
    const base = file('base.vmdk');
    qemu('qemu-img', ['create', '-q', '-f', 'vmdk', base, '4M']);
    const delta = path.join(file.dir, 'delta.vmdk');
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
    const content = bufferContent(rawBytes);
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
    qemuCompare(image, 'vmdk', raw);
    const info = JSON.parse(qemu('qemu-img', ['info', '--output=json', image])) as { 'virtual-size': number; 'format-specific': { data: { 'create-type': string } } };
    expect(info['format-specific'].data['create-type']).toBe(subformat);
    expect(info['virtual-size']).toBe(rawBytes.length);
    // The zero run and the holes are not stored: 29 whole grains and the last partial one.
    expect(result.dataBytes).toBe((2 + 1 + 24 + 2) * 65536 + 1536);
    const back = await openImage(fileSource(image));
    expect(back.subformat).toBe(subformat);
  });
});
