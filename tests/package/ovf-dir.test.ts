import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PackageError } from '../../src/package/errors.js';
import type { PackageResult } from '../../src/package/ova-reader.js';
import { readOvfDir } from '../../src/package/ovf-dir.js';
import { openPackageDisk } from '../../src/package/package-disk.js';
import { writeOvf } from '../../src/package/ovf-write.js';
import { hasTool } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { decoded, diskBytes, drain, manifestFor, settingsWith, sh, sha, writeFiles } from './package-support.js';

const MiB = 1024 * 1024;
const tools = hasTool('sha256sum') && hasTool('qemu-img');

describe.skipIf(!tools)('OVF directory reader', () => {
  const { dir: root, cleanup } = scratchDir('ovf-dir');
  afterAll(cleanup);
  let n = 0;

  /** A package directory: a raw disk and a streamOptimized VMDK made by qemu-img, with a manifest. */
  async function pkg(): Promise<{ dir: string; raw: Buffer; vmdk: Buffer }> {
    const dir = path.join(root, `p${n++}`);
    fs.mkdirSync(dir);
    const raw = diskBytes(2 * MiB, 31);
    writeFiles(dir, { 'app-disk1.img': raw, 'src.img': diskBytes(MiB, 32) });
    await sh(dir, 'qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'src.img', 'app-disk2.vmdk']);
    fs.rmSync(path.join(dir, 'src.img'));
    const vmdk = fs.readFileSync(path.join(dir, 'app-disk2.vmdk'));
    const ovf = writeOvf(settingsWith([2 * MiB, MiB]), [
      { disk: 'disk1', href: 'app-disk1.img', size: raw.length, format: 'raw', subformat: null },
      { disk: 'disk2', href: 'app-disk2.vmdk', size: vmdk.length, format: 'vmdk', subformat: 'streamOptimized' },
    ]);
    fs.writeFileSync(path.join(dir, 'app.ovf'), ovf);
    fs.writeFileSync(path.join(dir, 'app.mf'), await manifestFor(dir, ['app.ovf', 'app-disk1.img', 'app-disk2.vmdk']));
    return { dir, raw, vmdk };
  }

  async function read(target: string): Promise<{ result: PackageResult; disks: Map<string, { sha: string; seekable: boolean }> }> {
    const disks = new Map<string, { sha: string; seekable: boolean }>();
    const result = await readOvfDir(target, { name: target, onDisk: async (d, s) => void disks.set(d.name, { sha: sha(await drain(s)), seekable: s.seekable }) });
    return { result, disks };
  }

  it('reads a directory or its .ovf, verifies the manifest and hands the disks over as files', async () => {
    const { dir, raw, vmdk } = await pkg();
    for (const target of [dir, path.join(dir, 'app.ovf')]) {
      const { result, disks } = await read(target);
      expect(result.manifest).toBe(path.join(dir, 'app.mf'));
      expect(result.descriptor.settings.source).toBe('ovf');
      expect(disks.get('disk1')).toEqual({ sha: sha(raw), seekable: true });
      expect(disks.get('disk2')).toEqual({ sha: sha(vmdk), seekable: true });
    }
  });

  it('refuses a damaged manifest, a missing disk, a link out of the package, a raw disk over its capacity', async () => {
    const a = await pkg();
    const f = fs.openSync(path.join(a.dir, 'app-disk1.img'), 'r+');
    fs.writeSync(f, Buffer.from([a.raw[5]! ^ 1]), 0, 1, 5);
    fs.closeSync(f);
    await expect(read(a.dir)).rejects.toThrow(/app-disk1\.img: its SHA256 digest is .* but .*app\.mf says/);

    const b = await pkg();
    fs.rmSync(path.join(b.dir, 'app-disk2.vmdk'));
    fs.rmSync(path.join(b.dir, 'app.mf'));
    await expect(read(b.dir)).rejects.toThrow(/disk disk2: its file app-disk2\.vmdk is missing from the package/);

    const c = await pkg();
    fs.rmSync(path.join(c.dir, 'app-disk1.img'));
    fs.symlinkSync(path.join(root, 'elsewhere.img'), path.join(c.dir, 'app-disk1.img'));
    fs.writeFileSync(path.join(root, 'elsewhere.img'), c.raw);
    await expect(read(c.dir)).rejects.toThrow(/is a link to .*elsewhere\.img, outside the package directory/);

    const d = await pkg();
    fs.writeFileSync(path.join(d.dir, 'app.ovf'), fs.readFileSync(path.join(d.dir, 'app.ovf'), 'utf8').replace('ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^20"', 'ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^20"'));
    fs.rmSync(path.join(d.dir, 'app.mf'));
    await expect(read(d.dir)).rejects.toThrow(PackageError);
    await expect(read(d.dir)).rejects.toThrow(/app-disk1\.img: is 2097152 bytes, more than its declared capacity of 1048576 bytes/);
  });

  it('streams a gzipped disk and joins a chunked one', async () => {
    const dir = path.join(root, `p${n++}`);
    fs.mkdirSync(dir);
    const a = diskBytes(2 * MiB, 33);
    const b = diskBytes(3 * MiB, 34);
    writeFiles(dir, { 'd1.img': a, 'd2.img': b });
    await sh(dir, 'gzip', ['-n', 'd1.img']);
    fs.renameSync(path.join(dir, 'd1.img.gz'), path.join(dir, 'd1.img'));
    await sh(dir, 'split', ['-b', String(MiB), '-d', '-a', '9', 'd2.img', 'd2.img.']);
    fs.rmSync(path.join(dir, 'd2.img'));
    const ovf = writeOvf(settingsWith([2 * MiB, 3 * MiB]), [
      { disk: 'disk1', href: 'd1.img', size: fs.statSync(path.join(dir, 'd1.img')).size, format: 'raw', subformat: null },
      { disk: 'disk2', href: 'd2.img', size: b.length, format: 'raw', subformat: null },
    ])
      .replace('ovf:id="file1"', 'ovf:id="file1" ovf:compression="gzip"')
      .replace('ovf:id="file2"', `ovf:id="file2" ovf:chunkSize="${MiB}"`);
    fs.writeFileSync(path.join(dir, 'app.ovf'), ovf);
    const { disks, result } = await read(dir);
    expect(disks.get('disk1')).toEqual({ sha: sha(a), seekable: false });
    expect(disks.get('disk2')).toEqual({ sha: sha(b), seekable: false });
    expect(result.notes).toEqual([`${path.join(dir, 'app.ovf')} has no manifest (app.mf): its files were not verified`]);
  });

  it('opens a qcow2 disk qemu-img made as the descriptor says, and refuses one larger than its declared capacity', async () => {
    const dir = path.join(root, `p${n++}`);
    fs.mkdirSync(dir);
    const data = diskBytes(MiB, 35);
    writeFiles(dir, { 'src.img': data });
    await sh(dir, 'qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', 'src.img', 'd.qcow2']);
    const ovf = (capacity: number): string => writeOvf(settingsWith([capacity]), [{ disk: 'disk1', href: 'd.qcow2', size: fs.statSync(path.join(dir, 'd.qcow2')).size, format: 'qcow2', subformat: null }]);
    fs.writeFileSync(path.join(dir, 'app.ovf'), ovf(MiB));
    let got: Buffer = Buffer.alloc(0);
    await readOvfDir(dir, { name: dir, onDisk: async (disk, source) => void (got = await decoded(await openPackageDisk(disk, source))) });
    expect(sha(got)).toBe(sha(data));
    fs.writeFileSync(path.join(dir, 'app.ovf'), ovf(512 * 1024));
    await expect(readOvfDir(dir, { name: dir, onDisk: async (disk, source) => void (await openPackageDisk(disk, source)) })).rejects.toThrow(/d\.qcow2: is a 1048576-byte image, larger than its declared capacity of 524288 bytes/);
  });
});
