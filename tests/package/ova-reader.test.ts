import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PackageError, UnsupportedPackageError } from '../../src/package/errors.js';
import { readOva, type PackageResult } from '../../src/package/ova-reader.js';
import { writeOvf } from '../../src/package/ovf-write.js';
import { BLOCK, blocks, ustarHeader } from '../../src/package/tar-header.js';
import { openPackageDisk } from '../../src/package/package-disk.js';
import { hasTool } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { decoded, diskBytes, drain, manifestFor, settingsWith, sh, sha, writeFiles } from './package-support.js';

const MiB = 1024 * 1024;
const tools = hasTool('tar') && hasTool('sha256sum');

describe.skipIf(!tools)('OVA reader', () => {
  const { dir: root, cleanup } = scratchDir('ova-read');
  let n = 0;
  beforeAll(() => fs.mkdirSync(root, { recursive: true }));
  afterAll(cleanup);

  /** A fresh directory holding `files`; the OVA is `tar cf` of `members` in that order. */
  async function ova(files: Record<string, string | Buffer>, members: string[], opts: { manifest?: string[] } = {}): Promise<string> {
    const dir = path.join(root, `p${n++}`);
    fs.mkdirSync(dir);
    writeFiles(dir, files);
    const list = [...members];
    if (opts.manifest) {
      fs.writeFileSync(path.join(dir, 'app.mf'), await manifestFor(dir, opts.manifest));
      list.splice(1, 0, 'app.mf');
    }
    await sh(dir, 'tar', ['--format=ustar', '-cf', 'app.ova', ...list]);
    return path.join(dir, 'app.ova');
  }

  /** Reads the OVA at `file`, collecting each disk's decoded bytes. */
  async function read(file: string): Promise<{ result: PackageResult; disks: Map<string, Buffer> }> {
    const disks = new Map<string, Buffer>();
    const result = await readOva(fs.createReadStream(file), { name: file, onDisk: async (disk, source) => void disks.set(disk.name, await drain(source)) });
    return { result, disks };
  }

  const raw = (capacities: number[], sizes: (number | null)[], hrefs = capacities.map((_c, i) => `app-disk${i + 1}.img`)): string =>
    writeOvf(
      settingsWith(capacities),
      hrefs.map((href, i) => ({ disk: `disk${i + 1}`, href, size: sizes[i] ?? null, format: 'raw', subformat: null })),
    );

  it('reads the descriptor, verifies the manifest and hands each disk over in tar order', async () => {
    const a = diskBytes(2 * MiB, 1);
    const b = diskBytes(1 * MiB, 2);
    const file = await ova({ 'app.ovf': raw([2 * MiB, 4 * MiB], [a.length, b.length]), 'app-disk1.img': a, 'app-disk2.img': b }, ['app.ovf', 'app-disk1.img', 'app-disk2.img'], { manifest: ['app.ovf', 'app-disk1.img', 'app-disk2.img'] });
    const order: string[] = [];
    const disks = new Map<string, Buffer>();
    const result = await readOva(fs.createReadStream(file), {
      name: file,
      onDescriptor: (d) => void order.push(`descriptor ${d.disks.length}`),
      onDisk: async (disk, source) => {
        order.push(disk.name);
        const reader = await openPackageDisk(disk, source);
        expect(reader.virtualSize).toBe(source.size);
        // The reader owns the source now (a stream is read once): the bytes come from its decode.
        disks.set(disk.name, await decoded(reader));
      },
    });
    expect(order).toEqual(['descriptor 2', 'disk1', 'disk2']);
    expect(sha(disks.get('disk1'))).toBe(sha(a));
    expect(sha(disks.get('disk2'))).toBe(sha(b));
    expect(result.manifest).toMatch(/app\.mf/);
    expect(result.descriptor.settings.disks.map((d) => d.capacity)).toEqual([2 * MiB, 4 * MiB]);
  });

  it('refuses a damaged manifest, naming the file', async () => {
    const a = diskBytes(MiB, 3);
    const file = await ova({ 'app.ovf': raw([MiB], [a.length]), 'app-disk1.img': a }, ['app.ovf', 'app-disk1.img'], { manifest: ['app.ovf', 'app-disk1.img'] });
    // Flip one byte of the disk inside the tar, after the manifest was made.
    const tarBytes = fs.readFileSync(file);
    const at = tarBytes.indexOf(a.subarray(0, 64));
    tarBytes[at + 1000] ^= 0xff;
    fs.writeFileSync(file, tarBytes);
    await expect(read(file)).rejects.toThrow(PackageError);
    await expect(read(file)).rejects.toThrow(/app-disk1\.img: its SHA256 digest is [0-9a-f]{64}, but app\.mf in .* says/);
  });

  it('refuses a manifest line that is not a digest line, and one naming a file the package lacks', async () => {
    const a = diskBytes(MiB, 4);
    const bad = await ova({ 'app.ovf': raw([MiB], [a.length]), 'app.mf': 'this is not a manifest\n', 'app-disk1.img': a }, ['app.ovf', 'app.mf', 'app-disk1.img']);
    await expect(read(bad)).rejects.toThrow(/app\.mf in .*: line 1 is not 'SHA256\(file\)= digest'/);
    const dir = path.dirname(bad);
    const lacking = await ova({ 'app.ovf': raw([MiB, MiB], [a.length, a.length]), 'app-disk1.img': a, 'app-disk2.img': a }, ['app.ovf', 'app-disk1.img'], { manifest: ['app.ovf', 'app-disk1.img', 'app-disk2.img'] });
    expect(dir).not.toBe(path.dirname(lacking));
    await expect(read(lacking)).rejects.toThrow(/disk disk2: its file app-disk2\.img is missing from the package/);
  });

  it('refuses a disk the tar lacks, naming the disk and its file', async () => {
    const a = diskBytes(MiB, 5);
    const file = await ova({ 'app.ovf': raw([MiB, MiB], [a.length, a.length]), 'app-disk1.img': a }, ['app.ovf', 'app-disk1.img']);
    await expect(read(file)).rejects.toThrow(/disk disk2: its file app-disk2\.img is missing from the package/);
  });

  it('refuses hrefs that leave the package: .., absolute paths, URLs', async () => {
    const a = diskBytes(MiB, 6);
    for (const href of ['../outside.img', '/etc/passwd', 'http://example.com/disk.img', 'sub/../../x.img']) {
      const ovf = raw([MiB], [a.length], ['inside.img']).replace('ovf:href="inside.img"', `ovf:href="${href}"`);
      const file = await ova({ 'app.ovf': ovf, 'inside.img': a }, ['app.ovf', 'inside.img']);
      await expect(read(file)).rejects.toThrow(new RegExp(`the href '${href.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}' (leaves the package|is an absolute path|is a URL)`));
    }
  });

  it('refuses a truncated tar as truncated', async () => {
    const a = diskBytes(2 * MiB, 7);
    const file = await ova({ 'app.ovf': raw([2 * MiB], [a.length]), 'app-disk1.img': a }, ['app.ovf', 'app-disk1.img']);
    fs.truncateSync(file, 1.5 * MiB);
    let reached = 0;
    const attempt = readOva(fs.createReadStream(file), { name: file, onDisk: async (_d, s) => void (reached = (await drain(s).catch(() => Buffer.alloc(0))).length) });
    await expect(attempt).rejects.toThrow(/ends in the middle of the tar \(truncated/);
    expect(reached).toBeLessThan(a.length);
  });

  it('refuses a raw disk larger than its declared capacity, and a member larger than its declared size', async () => {
    const a = diskBytes(2 * MiB, 8);
    const big = await ova({ 'app.ovf': raw([MiB], [a.length]), 'app-disk1.img': a }, ['app.ovf', 'app-disk1.img']);
    await expect(read(big)).rejects.toThrow(/app-disk1\.img in .* is 2097152 bytes, more than its declared capacity of 1048576 bytes/);
    const longer = await ova({ 'app.ovf': raw([4 * MiB], [MiB]), 'app-disk1.img': a }, ['app.ovf', 'app-disk1.img']);
    await expect(read(longer)).rejects.toThrow(/app-disk1\.img is 2097152 bytes in the tar, but the descriptor says 1048576 \(larger than declared\)/);
  });

  it('refuses a gzipped raw disk that decodes past its capacity', async () => {
    const a = diskBytes(2 * MiB, 9);
    const gz = zlib.gzipSync(a);
    const ovf = raw([MiB], [gz.length]).replace('ovf:id="file1"', 'ovf:id="file1" ovf:compression="gzip"');
    const file = await ova({ 'app.ovf': ovf, 'app-disk1.img': gz }, ['app.ovf', 'app-disk1.img']);
    await expect(read(file)).rejects.toThrow(/holds more than its declared capacity of 1048576 bytes/);
  });

  it('gunzips a gzip-compressed file and joins a chunked one, checking each against the manifest', async () => {
    const a = diskBytes(3 * MiB, 10);
    const b = diskBytes(3 * MiB + 4096, 11);
    const dir = path.join(root, `p${n++}`);
    fs.mkdirSync(dir);
    writeFiles(dir, { 'app-disk1.img': a, 'app-disk2.img': b });
    await sh(dir, 'gzip', ['-n', 'app-disk1.img']);
    fs.renameSync(path.join(dir, 'app-disk1.img.gz'), path.join(dir, 'app-disk1.img'));
    // OVF's chunk names: the href, a dot, nine digits.
    await sh(dir, 'split', ['-b', String(MiB), '-d', '-a', '9', 'app-disk2.img', 'app-disk2.img.']);
    fs.rmSync(path.join(dir, 'app-disk2.img'));
    const chunks = fs.readdirSync(dir).filter((f) => f.startsWith('app-disk2.img.')).sort();
    expect(chunks).toHaveLength(4);
    const gzSize = fs.statSync(path.join(dir, 'app-disk1.img')).size;
    let ovf = raw([4 * MiB, 4 * MiB], [gzSize, b.length]);
    ovf = ovf.replace('ovf:id="file1"', 'ovf:id="file1" ovf:compression="gzip"').replace('ovf:id="file2"', `ovf:id="file2" ovf:chunkSize="${MiB}"`);
    fs.writeFileSync(path.join(dir, 'app.ovf'), ovf);
    fs.writeFileSync(path.join(dir, 'app.mf'), await manifestFor(dir, ['app.ovf', 'app-disk1.img', ...chunks]));
    await sh(dir, 'tar', ['-cf', 'app.ova', 'app.ovf', 'app.mf', 'app-disk1.img', ...chunks]);
    const { disks, result } = await read(path.join(dir, 'app.ova'));
    expect(sha(disks.get('disk1'))).toBe(sha(a));
    expect(sha(disks.get('disk2'))).toBe(sha(b));
    expect(result.notes).toEqual([]);
    // A chunk changed after the manifest was made is caught.
    const tarBytes = fs.readFileSync(path.join(dir, 'app.ova'));
    const second = tarBytes.indexOf(b.subarray(MiB + 100, MiB + 164));
    expect(second).toBeGreaterThan(0);
    tarBytes[second + 10] ^= 1;
    fs.writeFileSync(path.join(dir, 'bad.ova'), tarBytes);
    await expect(read(path.join(dir, 'bad.ova'))).rejects.toThrow(/app-disk2\.img\.000000001: its SHA256 digest/);
  });

  it('refuses an OVA whose first member is not the descriptor, and a collection of several VMs', async () => {
    const a = diskBytes(MiB, 12);
    const first = await ova({ 'app.ovf': raw([MiB], [a.length]), 'app-disk1.img': a }, ['app-disk1.img', 'app.ovf']);
    await expect(read(first)).rejects.toThrow(/its first member is app-disk1\.img; an OVA starts with its \.ovf descriptor/);
    const collection = raw([MiB], [a.length]).replace(/<VirtualSystem /, '<VirtualSystemCollection ovf:id="c"><Info>x</Info><VirtualSystem ').replace('</VirtualSystem>', '</VirtualSystem></VirtualSystemCollection>');
    const multi = await ova({ 'app.ovf': collection, 'app-disk1.img': a }, ['app.ovf', 'app-disk1.img']);
    await expect(read(multi)).rejects.toThrow(UnsupportedPackageError);
    await expect(read(multi)).rejects.toThrow(/a VirtualSystemCollection \(a package of several virtual machines/);
  });

  it('notes a certificate (not verified) and a member no References name', async () => {
    const a = diskBytes(MiB, 13);
    const file = await ova({ 'app.ovf': raw([MiB], [a.length]), 'app.cert': 'cert', 'app-disk1.img': a, 'README.txt': 'hello' }, ['app.ovf', 'app.cert', 'app-disk1.img', 'README.txt'], { manifest: ['app.ovf', 'app-disk1.img'] });
    const { result, disks } = await read(file);
    expect(sha(disks.get('disk1'))).toBe(sha(a));
    expect(result.certificate).toBe('app.cert');
    expect(result.notes).toEqual(['the certificate app.cert was not verified (Strata checks the manifest\'s digests, not signatures)', "README.txt is not in the descriptor's References; left out"]);
  });

  it('a disk the importer fails on fails the read, after the importer stopped', async () => {
    const a = diskBytes(2 * MiB, 14);
    const file = await ova({ 'app.ovf': raw([2 * MiB], [a.length]), 'app-disk1.img': a }, ['app.ovf', 'app-disk1.img']);
    await expect(readOva(fs.createReadStream(file), { name: file, onDisk: async () => Promise.reject(new Error('volume full')) })).rejects.toThrow('volume full');
  });

  it('a download cut mid-way fails the read with its error, and the importer sees it too', async () => {
    const a = diskBytes(4 * MiB, 15);
    const file = await ova({ 'app.ovf': raw([4 * MiB], [a.length]), 'app-disk1.img': a }, ['app.ovf', 'app-disk1.img']);
    const bytes = fs.readFileSync(file);
    // A body that stops after 2 MiB with a reset, as an HTTP response does when the server goes away.
    const body = new Readable({ read() {} });
    body.push(bytes.subarray(0, 2 * MiB));
    setImmediate(() => body.destroy(new Error('socket hang up')));
    let importerSaw = '';
    await expect(
      readOva(body, {
        name: 'http://127.0.0.1/app.ova',
        onDisk: async (_d, s) => {
          importerSaw = await drain(s).then(
            () => 'end',
            (err: Error) => err.message,
          );
        },
      }),
    ).rejects.toThrow('socket hang up');
    expect(importerSaw).toBe('socket hang up');
  });

  it.skipIf(!hasTool('qemu-img'))('streams a qcow2 disk qemu-img made through its reader, and refuses one the descriptor calls VMDK', async () => {
    const dir = path.join(root, `p${n++}`);
    fs.mkdirSync(dir);
    const data = diskBytes(2 * MiB, 16);
    writeFiles(dir, { 'src.img': data });
    await sh(dir, 'qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', 'src.img', 'd.qcow2']);
    const size = fs.statSync(path.join(dir, 'd.qcow2')).size;
    const make = async (format: 'qcow2' | 'vmdk'): Promise<string> => {
      fs.writeFileSync(path.join(dir, 'app.ovf'), writeOvf(settingsWith([2 * MiB]), [{ disk: 'disk1', href: 'd.qcow2', size, format, subformat: format === 'vmdk' ? 'streamOptimized' : null }]));
      await sh(dir, 'tar', ['-cf', `${format}.ova`, 'app.ovf', 'd.qcow2']);
      return path.join(dir, `${format}.ova`);
    };
    let got: Buffer = Buffer.alloc(0);
    const decode = async (file: string): Promise<PackageResult> => readOva(fs.createReadStream(file), { name: file, onDisk: async (disk, source) => void (got = await decoded(await openPackageDisk(disk, source))) });
    await decode(await make('qcow2'));
    expect(sha(got)).toBe(sha(data));
    await expect(decode(await make('vmdk'))).rejects.toThrow(/d\.qcow2 in .*: the descriptor says vmdk, but the file is qcow2/);
  });

  it('memory stays bounded on a package much larger than what is held at once', async () => {
    // A 256 MiB OVA made on the fly, block by block as it is read, never on disk or in memory whole; with a
    // manifest, so that one digest is taken. Memory is sampled without a forced GC, so garbage counts:
    // the bound is half the package, which holding the disk whole would pass.
    const size = 256 * MiB;
    const block = Buffer.alloc(MiB, 0x6b);
    const digest = crypto.createHash('sha256');
    for (let at = 0; at < size; at += MiB) digest.update(block);
    const ovf = Buffer.from(raw([size], [size]));
    const mf = Buffer.from(`SHA256(app.ovf)= ${crypto.createHash('sha256').update(ovf).digest('hex')}\nSHA256(app-disk1.img)= ${digest.digest('hex')}\n`);
    const pad = (n: number): Buffer => Buffer.alloc(blocks(n) - n);
    const generated = Readable.from(
      (function* () {
        yield ustarHeader('app.ovf', ovf.length, new Date(0));
        yield Buffer.concat([ovf, pad(ovf.length)]);
        yield ustarHeader('app.mf', mf.length, new Date(0));
        yield Buffer.concat([mf, pad(mf.length)]);
        yield ustarHeader('app-disk1.img', size, new Date(0));
        for (let at = 0; at < size; at += MiB) yield block;
        yield Buffer.alloc(2 * BLOCK);
      })(),
    );
    const before = process.memoryUsage().arrayBuffers;
    let peak = 0;
    let bytes = 0;
    await readOva(generated, {
      name: 'generated.ova',
      onDisk: async (_d, source) => {
        for (let at = 0; ; at += 4 * MiB) {
          const b = await source.read(at, 4 * MiB);
          if (b.length === 0) break;
          bytes += b.length;
          peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
        }
      },
    });
    expect(bytes).toBe(size);
    expect(peak).toBeLessThan(size / 2);
  });
});
