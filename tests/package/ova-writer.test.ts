import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ByteSink, ContentRun, ImageContent } from '../../src/image/image-writer.js';
import { writeRaw } from '../../src/image/raw.js';
import { readOva } from '../../src/package/ova-reader.js';
import { writeOva } from '../../src/package/ova-writer.js';
import { readOvfDir } from '../../src/package/ovf-dir.js';
import { writeOvfDir } from '../../src/package/ovf-dir-writer.js';
import { writeOvf } from '../../src/package/ovf-write.js';
import { BLOCK, ustarHeader } from '../../src/package/tar-header.js';
import { hasTool } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { diskBytes, drain, settingsWith, sh, sha } from './package-support.js';

const MiB = 1024 * 1024;
const tools = hasTool('tar') && hasTool('sha256sum') && hasTool('qemu-img');

/** A buffer as what an image writer writes: its zero-filled half as a hole. */
function content(buf: Buffer): ImageContent {
  const half = Math.floor(buf.length / 2);
  const runs: ContentRun[] = [
    { offset: 0, length: half, kind: 'data' },
    { offset: half, length: Math.floor((3 * buf.length) / 4) - half, kind: 'hole' },
    { offset: Math.floor((3 * buf.length) / 4), length: buf.length - Math.floor((3 * buf.length) / 4), kind: 'data' },
  ];
  return {
    size: buf.length,
    runs: async function* () {
      yield* runs;
    },
    read: async (out, offset) => void buf.copy(out, 0, offset, offset + out.length),
  };
}

/** Copies `file` into the sink back to front, as a writer that puts tables after data and goes back would. */
async function backwards(file: string, sink: ByteSink): Promise<void> {
  const data = fs.readFileSync(file);
  const step = 64 * 1024;
  for (let at = Math.floor((data.length - 1) / step) * step; at >= 0; at -= step) await sink.write(data.subarray(at, at + step), at);
  await sink.finish(data.length);
}

describe.skipIf(!tools)('OVA writer', () => {
  const { dir, cleanup } = scratchDir('ova-write');
  afterAll(cleanup);

  it('writes .ovf, .mf, then the disks in order; tar lists it, sha256sum -c checks it, qemu-img reads the disk, Strata reads it back', async () => {
    const raw = diskBytes(3 * MiB, 21);
    // A real streamOptimized VMDK, as OVAs carry, made by qemu-img from raw data.
    fs.writeFileSync(path.join(dir, 'src.img'), diskBytes(2 * MiB, 22));
    await sh(dir, 'qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'src.img', 'src.vmdk']);
    const settings = settingsWith([3 * MiB, 2 * MiB]);
    const ova = path.join(dir, 'app.ova');
    const members = await writeOva(ova, {
      ovfName: 'app.ovf',
      descriptor: (sizes) =>
        writeOvf(settings, [
          { disk: 'disk1', href: 'app-disk1.img', size: sizes.get('app-disk1.img')!, format: 'raw', subformat: null },
          { disk: 'disk2', href: 'app-disk2.vmdk', size: sizes.get('app-disk2.vmdk')!, format: 'vmdk', subformat: 'streamOptimized' },
        ]),
      disks: [
        { href: 'app-disk1.img', write: async (sink) => void (await writeRaw(content(raw), sink, {})) },
        { href: 'app-disk2.vmdk', write: (sink) => backwards(path.join(dir, 'src.vmdk'), sink) },
      ],
    });
    expect(members.map((m) => m.name)).toEqual(['app.ovf', 'app.mf', 'app-disk1.img', 'app-disk2.vmdk']);
    const listing = await sh(dir, 'tar', ['tvf', 'app.ova']);
    expect(listing.trim().split('\n').map((l) => l.split(/\s+/).at(-1))).toEqual(['app.ovf', 'app.mf', 'app-disk1.img', 'app-disk2.vmdk']);
    const out = path.join(dir, 'x');
    fs.mkdirSync(out);
    await sh(out, 'tar', ['xf', ova]);
    expect(await sh(out, 'sha256sum', ['-c', 'app.mf'])).toBe('app.ovf: OK\napp-disk1.img: OK\napp-disk2.vmdk: OK\n');
    expect(sha(fs.readFileSync(path.join(out, 'app-disk1.img')))).toBe(sha(raw));
    await sh(out, 'qemu-img', ['compare', '-f', 'vmdk', '-F', 'raw', 'app-disk2.vmdk', path.join(dir, 'src.img')]);
    // The descriptor names the true sizes.
    expect(fs.readFileSync(path.join(out, 'app.ovf'), 'utf8')).toContain(`ovf:href="app-disk2.vmdk" ovf:id="file2" ovf:size="${fs.statSync(path.join(dir, 'src.vmdk')).size}"`);
    const seen = new Map<string, string>();
    const back = await readOva(fs.createReadStream(ova), { name: ova, onDisk: async (d, s) => void seen.set(d.name, sha(await drain(s))) });
    expect(back.descriptor.settings).toEqual({ ...settings, source: 'ova' });
    expect(back.notes).toEqual([]);
    expect(seen.get('disk1')).toBe(sha(raw));
    expect(seen.get('disk2')).toBe(sha(fs.readFileSync(path.join(dir, 'src.vmdk'))));
  });

  it('sizes of 8 GiB and more go into the header in base 256, as tar reads them', async () => {
    // A sparse tar by hand: the header, a hole for the data, the end blocks (hashing 9 GiB would take too long here).
    const ova = path.join(dir, 'big.tar');
    const size = 9 * 1024 * MiB + 512;
    const fd = fs.openSync(ova, 'w');
    fs.writeSync(fd, ustarHeader('big.img', size, new Date(0)), 0, BLOCK, 0);
    fs.ftruncateSync(fd, BLOCK + size + 2 * BLOCK);
    fs.closeSync(fd);
    const listing = await sh(dir, 'tar', ['tvf', 'big.tar']);
    expect(listing).toMatch(new RegExp(`\\s${size}\\s.*big\\.img`));
    expect(ustarHeader('small', 8 ** 11 - 1, new Date(0)).toString('latin1', 124, 136)).toBe('77777777777\0');
  });

  it('a disk that fails leaves no file behind', async () => {
    const ova = path.join(dir, 'fail.ova');
    await expect(
      writeOva(ova, {
        ovfName: 'fail.ovf',
        descriptor: (sizes) => writeOvf(settingsWith([MiB]), [{ disk: 'disk1', href: 'd.img', size: sizes.get('d.img')!, format: 'raw', subformat: null }]),
        disks: [{ href: 'd.img', write: () => Promise.reject(new Error('read error on the volume')) }],
      }),
    ).rejects.toThrow('read error on the volume');
    expect(fs.existsSync(ova)).toBe(false);
  });

  it('writes the directory form: disk files, the descriptor with their sizes, a manifest sha256sum -c checks; it reads back', async () => {
    const raw = diskBytes(3 * MiB, 23);
    const out = path.join(dir, 'ovfdir');
    const settings = settingsWith([3 * MiB]);
    await writeOvfDir(out, {
      ovfName: 'app.ovf',
      descriptor: (sizes) => writeOvf(settings, [{ disk: 'disk1', href: 'app-disk1.img', size: sizes.get('app-disk1.img')!, format: 'raw', subformat: null }]),
      disks: [{ href: 'app-disk1.img', write: async (sink) => void (await writeRaw(content(raw), sink, {})) }],
    });
    expect(fs.readdirSync(out).sort()).toEqual(['app-disk1.img', 'app.mf', 'app.ovf']);
    expect(await sh(out, 'sha256sum', ['-c', 'app.mf'])).toBe('app.ovf: OK\napp-disk1.img: OK\n');
    const seen = new Map<string, string>();
    const back = await readOvfDir(out, { name: out, onDisk: async (d, s) => void seen.set(d.name, sha(await drain(s))) });
    expect(back.descriptor.settings).toEqual({ ...settings, source: 'ovf' });
    expect(seen.get('disk1')).toBe(sha(raw));
    // A second export into the same place refuses to overwrite, and leaves the first intact.
    await expect(writeOvfDir(out, { ovfName: 'app.ovf', descriptor: () => '', disks: [{ href: 'app-disk1.img', write: async () => undefined }] })).rejects.toThrow(/EEXIST/);
    expect(await sh(out, 'sha256sum', ['-c', 'app.mf'])).toContain('app-disk1.img: OK');
  });
});
