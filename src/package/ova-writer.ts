import crypto from 'node:crypto';
import fs from 'node:fs';
import { fdSource } from '../image/byte-source.js';
import { fileSink } from '../image/file-sink.js';
import type { ByteSink } from '../image/image-writer.js';
import { checkHref } from './href.js';
import { manifestText } from './manifest.js';
import { blocks, BLOCK, RECORD, ustarHeader } from './tar-header.js';

export interface OvaDiskMember {
  href: string;
  /** Writes the disk file into `sink` (an image writer's output), ending with `sink.finish(size)`. */
  write(sink: ByteSink): Promise<void>;
}

export interface WriteOvaOptions {
  /** The descriptor's member name: `app.ovf`. The manifest is the same name with `.mf`. */
  ovfName: string;
  /**
   * The descriptor text given each disk file's size by href. Called once
   * with the largest sizes to reserve its room before the disks, and once
   * with the real sizes after: ovf:size is only known then.
   */
  descriptor: (sizes: ReadonlyMap<string, number>) => string;
  disks: readonly OvaDiskMember[];
  mtime?: Date;
}

export interface OvaMember {
  name: string;
  size: number;
  sha256: string;
}

/** A disk file's output at `base` in the file `fd` (an OVA, or the disk's own file); hashed as written while writes go forward, read back otherwise. */
export function hashedSink(fd: number, base: number, name: string): { sink: ByteSink; done: () => Promise<{ size: number; sha256: string }> } {
  const file = fileSink(fd, name);
  const hash = crypto.createHash('sha256');
  let hashed = 0;
  let inOrder = true;
  let extent = 0;
  let size: number | null = null;
  const zeroes = Buffer.alloc(1024 * 1024);
  const hashZeroes = (n: number): void => {
    for (; n > 0; n -= Math.min(n, zeroes.length)) hash.update(zeroes.subarray(0, Math.min(n, zeroes.length)));
  };
  const sink: ByteSink = {
    name,
    seekable: true,
    write: async (buf, offset) => {
      if (size !== null) throw new Error(`${name}: written after it was finished`);
      await file.write(buf, base + offset);
      extent = Math.max(extent, offset + buf.length);
      if (inOrder && offset >= hashed) {
        hashZeroes(offset - hashed);
        hash.update(buf);
        hashed = offset + buf.length;
      } else inOrder = false;
    },
    finish: async (n) => {
      if (n < extent) throw new Error(`${name}: ends at ${n} bytes, but ${extent} were written`);
      size = n;
    },
  };
  const done = async (): Promise<{ size: number; sha256: string }> => {
    if (size === null) throw new Error(`${name}: its writer did not finish it`);
    if (inOrder) {
      hashZeroes(size - hashed);
      return { size, sha256: hash.digest('hex') };
    }
    // The writer went back (tables after data): hash what the file holds now.
    const again = crypto.createHash('sha256');
    const src = fdSource(fd, name, base + size);
    for (let at = 0; at < size; at += 4 * 1024 * 1024) again.update(await src.read(base + at, Math.min(4 * 1024 * 1024, size - at)));
    return { size, sha256: again.digest('hex') };
  };
  return { sink, done };
}

/**
 * Writes an OVA at `path`: the descriptor, the manifest (SHA256 of the
 * descriptor and every disk), then the disks in the order given, each
 * written in place in the tar by its image writer. The descriptor and
 * manifest get their room first and their bytes last, and each disk's tar
 * header is written once its size is known. A failure removes the file.
 */
export async function writeOva(path: string, opts: WriteOvaOptions): Promise<OvaMember[]> {
  const mtime = opts.mtime ?? new Date();
  const mfName = opts.ovfName.replace(/\.ovf$/i, '') + '.mf';
  for (const n of [opts.ovfName, ...opts.disks.map((d) => d.href)]) checkHref(n, path);
  const names = new Set(opts.disks.map((d) => d.href));
  if (names.size !== opts.disks.length || names.has(opts.ovfName) || names.has(mfName)) throw new Error(`${path}: two members of the OVA would have one name`);
  const reserved = Buffer.byteLength(opts.descriptor(new Map(opts.disks.map((d) => [d.href, Number.MAX_SAFE_INTEGER]))));
  const placeholder = '0'.repeat(64);
  const mfSize = Buffer.byteLength(manifestText([opts.ovfName, ...opts.disks.map((d) => d.href)].map((file) => ({ file, sha256: placeholder }))));
  const fd = fs.openSync(path, 'w+');
  try {
    const out = fileSink(fd, path);
    const ovfAt = 0;
    const mfAt = ovfAt + BLOCK + blocks(reserved);
    let at = mfAt + BLOCK + blocks(mfSize);
    const members: OvaMember[] = [];
    for (const disk of opts.disks) {
      const { sink, done } = hashedSink(fd, at + BLOCK, `${disk.href} in ${path}`);
      await disk.write(sink);
      const { size, sha256 } = await done();
      await out.write(ustarHeader(disk.href, size, mtime), at);
      members.push({ name: disk.href, size, sha256 });
      at += BLOCK + blocks(size);
    }
    const sizes = new Map(members.map((m) => [m.name, m.size]));
    const text = opts.descriptor(sizes);
    const bytes = Buffer.byteLength(text);
    if (bytes > reserved) throw new Error(`${path}: the descriptor grew from ${reserved} to ${bytes} bytes between its two writings`);
    // Whitespace after the root element is allowed XML, so the descriptor fills its room exactly.
    const ovf = Buffer.concat([Buffer.from(text), Buffer.alloc(reserved - bytes, ' ')]);
    const ovfMember = { name: opts.ovfName, size: reserved, sha256: crypto.createHash('sha256').update(ovf).digest('hex') };
    const mf = Buffer.from(manifestText([ovfMember, ...members].map((m) => ({ file: m.name, sha256: m.sha256 }))));
    await out.write(ustarHeader(opts.ovfName, reserved, mtime), ovfAt);
    await out.write(ovf, ovfAt + BLOCK);
    await out.write(ustarHeader(mfName, mf.length, mtime), mfAt);
    await out.write(mf, mfAt + BLOCK);
    // Two zero blocks end the archive; the rest of the record is zeroes too (a hole).
    await out.finish(Math.ceil((at + 2 * BLOCK) / RECORD) * RECORD);
    return [ovfMember, { name: mfName, size: mf.length, sha256: crypto.createHash('sha256').update(mf).digest('hex') }, ...members];
  } catch (err) {
    fs.rmSync(path, { force: true });
    throw err;
  } finally {
    fs.closeSync(fd);
  }
}
