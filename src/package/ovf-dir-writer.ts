import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { checkHref } from './href.js';
import { manifestText } from './manifest.js';
import { hashedSink, type OvaMember, type WriteOvaOptions } from './ova-writer.js';

/**
 * Writes an OVF package as a directory: each disk file (hashed while its
 * image writer writes it), then the descriptor with the true sizes, then
 * the manifest (SHA256) under the descriptor's base name. Files are created
 * new (an existing one is refused); on failure those written are removed.
 */
export async function writeOvfDir(dir: string, opts: WriteOvaOptions): Promise<OvaMember[]> {
  const mfName = opts.ovfName.replace(/\.ovf$/i, '') + '.mf';
  for (const n of [opts.ovfName, ...opts.disks.map((d) => d.href)]) checkHref(n, dir);
  fs.mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  const create = (name: string): number => {
    const p = path.join(dir, name);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    const fd = fs.openSync(p, 'wx+');
    written.push(p);
    return fd;
  };
  try {
    const members: OvaMember[] = [];
    for (const disk of opts.disks) {
      const fd = create(disk.href);
      try {
        const { sink, done } = hashedSink(fd, 0, path.join(dir, disk.href));
        await disk.write(sink);
        const { size, sha256 } = await done();
        fs.ftruncateSync(fd, size);
        fs.fsyncSync(fd);
        members.push({ name: disk.href, size, sha256 });
      } finally {
        fs.closeSync(fd);
      }
    }
    const ovf = Buffer.from(opts.descriptor(new Map(members.map((m) => [m.name, m.size]))));
    const ovfMember = { name: opts.ovfName, size: ovf.length, sha256: crypto.createHash('sha256').update(ovf).digest('hex') };
    const mf = Buffer.from(manifestText([ovfMember, ...members].map((m) => ({ file: m.name, sha256: m.sha256 }))));
    for (const [name, bytes] of [
      [opts.ovfName, ovf],
      [mfName, mf],
    ] as const) {
      const fd = create(name);
      try {
        fs.writeSync(fd, bytes);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
    return [ovfMember, { name: mfName, size: mf.length, sha256: crypto.createHash('sha256').update(mf).digest('hex') }, ...members];
  } catch (err) {
    for (const p of written) fs.rmSync(p, { force: true });
    throw err;
  }
}
