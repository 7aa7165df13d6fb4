import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openImage } from '../../src/image/formats.js';
import { fileSource, type ByteSource } from '../../src/image/byte-source.js';
import { NotStreamableError } from '../../src/image/errors.js';
import { openQcow2 } from '../../src/image/qcow2/reader.js';
import { tool } from '../nbd/support.js';
import { decodeSource, type Decoded } from './support/decode.js';
import { haveQemu, qemuRaw } from './support/qemu.js';
import { compressible, seeded } from './support/random.js';
import { scratchFiles } from './support/scratch-files.js';
import { fileStream } from './support/sources.js';

const MiB = 1024 * 1024;
const scratch = scratchFiles('qcow2-read');
const at = (name: string): string => path.join(scratch.dir, name);
const decodeAll = (source: ByteSource, under?: Buffer): ReturnType<typeof decodeSource> => decodeSource(source, openQcow2, under);
const decodeFile = (file: string, under?: Buffer): ReturnType<typeof decodeSource> => decodeAll(fileSource(file), under);
/** A forward-only source over a file whose length is not told, as a pipe is. */
const forwardOnly = (file: string): ByteSource => fileStream(file, { name: `${file} (stream)`, sized: false });

/** Random bytes a write takes its data from (qemu-io write -s reads the file's first bytes). */
const noise = at('noise');
fs.writeFileSync(noise, crypto.randomBytes(4 * MiB));

const qemuImg = (...args: string[]): Promise<string> => tool('qemu-img', args);
const qemuIo = (file: string, cmds: string[], format = 'qcow2'): Promise<string> => tool('qemu-io', ['-f', format, ...cmds.flatMap((c) => ['-c', c]), file]);
const rawOf = async (file: string): Promise<Buffer> => qemuRaw(file, `${file}.raw`);

/** qemu-io commands writing data, zeroes and discards at random places: `seed` makes the same layout again. */
function scatter(size: number, seed: number, align: number, count: number): string[] {
  const rand = seeded(seed);
  const cmds: string[] = [];
  for (let i = 0; i < count; i++) {
    const length = align * (1 + Math.floor(rand() * 40));
    const offset = align * Math.floor(rand() * ((size - length) / align));
    const r = rand();
    if (r < 0.6) cmds.push(`write -s ${noise} ${offset} ${Math.min(length, 4 * MiB)}`);
    else if (r < 0.85) cmds.push(`write -z ${offset} ${length}`);
    else cmds.push(`discard ${offset} ${length}`);
  }
  return cmds;
}

describe.skipIf(!haveQemu())('qcow2 reader against images qemu made', () => {
  const cases: { name: string; opts: string; size: number; align: number }[] = [
    { name: 'v3, 64 KiB clusters', opts: 'cluster_size=65536', size: 32 * MiB, align: 512 },
    { name: 'v3, 4 KiB clusters', opts: 'cluster_size=4096', size: 16 * MiB, align: 512 },
    { name: 'v3, 2 MiB clusters', opts: 'cluster_size=2097152', size: 48 * MiB, align: 4096 },
    { name: 'v2 (compat 0.10)', opts: 'compat=0.10,cluster_size=65536', size: 32 * MiB, align: 512 },
    { name: 'v3, extended L2 (subclusters)', opts: 'extended_l2=on,cluster_size=65536', size: 32 * MiB, align: 2048 },
  ];
  for (const [i, c] of cases.entries()) {
    it(`${c.name}: data at random offsets, zeroes and holes read exactly, from a file and from a stream`, async () => {
      const file = at(`scatter-${i}.qcow2`);
      await qemuImg('create', '-q', '-f', 'qcow2', '-o', c.opts, file, String(c.size));
      await qemuIo(file, scatter(c.size, 1000 + i, c.align, 60));
      const want = await rawOf(file);
      const got = await decodeFile(file);
      expect(got.reader.virtualSize).toBe(c.size);
      expect(got.bytes.equals(want)).toBe(true);
      expect(got.dataBytes).toBeGreaterThan(0);
      const streamed = await decodeAll(forwardOnly(file));
      expect(streamed.bytes.equals(want)).toBe(true);
    });
  }

  it('zero clusters are reported as zeroes, not read as data', async () => {
    const file = at('zero.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', file, String(8 * MiB));
    await qemuIo(file, [`write -s ${noise} 0 ${2 * MiB}`, `write -z ${MiB} ${MiB}`, `write -z ${4 * MiB} ${MiB}`]);
    const got = await decodeFile(file);
    expect(got.zeroBytes).toBe(2 * MiB);
    expect(got.dataBytes).toBe(MiB);
    expect(got.bytes.equals(await rawOf(file))).toBe(true);
  });

  for (const [cs, extra] of [[4096, ''], [2 * MiB, ''], [65536, ',extended_l2=on']] as const) {
    it(`zlib-compressed clusters of ${cs / 1024} KiB${extra} inflate exactly (the offset and size fields depend on the cluster size)`, async () => {
      const rand = seeded(cs);
      const raw = at(`text-${cs}.raw`);
      fs.writeFileSync(raw, Buffer.concat([compressible(cs === 2 * MiB ? 4 * MiB : 2 * MiB, rand), fs.readFileSync(noise).subarray(0, cs === 2 * MiB ? 2 * MiB : MiB / 2), compressible(cs === 2 * MiB ? 2 * MiB : MiB / 2, rand)]));
      const file = at(`compressed-${cs}.qcow2`);
      await qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${cs}${extra}`, raw, file);
      const want = await rawOf(file);
      expect((await decodeFile(file)).bytes.equals(want)).toBe(true);
      expect((await decodeAll(forwardOnly(file))).bytes.equals(want)).toBe(true);
    });
  }

  it('zlib-compressed clusters (qemu-img convert -c, qemu-io write -c) inflate exactly, streamed too', async () => {
    const rand = seeded(7);
    const raw = at('text.raw');
    const size = 6 * MiB + 3 * 65536;
    const source = Buffer.alloc(size);
    for (let off = 0; off < size; off += 65536 * (1 + Math.floor(rand() * 3))) compressible(65536, rand).copy(source, off);
    crypto.randomBytes(3 * 65536).copy(source, 3 * MiB);
    // A hole for qemu-io's compressed write, which only goes to unallocated clusters.
    source.fill(0, 5 * MiB, 5 * MiB + 65536);
    fs.writeFileSync(raw, source);
    const file = at('compressed.qcow2');
    await qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, file);
    await qemuIo(file, [`write -c -s ${raw} ${5 * MiB} 65536`, `write -z ${2 * MiB} 65536`]);
    const check = await qemuImg('check', file);
    expect(Number(/([\d.]+)% compressed clusters/.exec(check)?.[1])).toBeGreaterThan(50);
    const want = await rawOf(file);
    expect((await decodeFile(file)).bytes.equals(want)).toBe(true);
    expect((await decodeAll(forwardOnly(file))).bytes.equals(want)).toBe(true);
  });

  it('an overlay names its backing file and format and reports only its own layer', async () => {
    const base = at('base.qcow2');
    const top = at('top.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', base, String(16 * MiB));
    await qemuIo(base, scatter(16 * MiB, 5, 512, 30));
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'base.qcow2', '-F', 'qcow2', top);
    await qemuIo(top, scatter(16 * MiB, 6, 2048, 30));
    const below = await decodeFile(base);
    const got = await decodeFile(top, below.bytes);
    expect(got.reader.backing).toEqual({ file: 'base.qcow2', format: 'qcow2' });
    expect(got.bytes.equals(await rawOf(top))).toBe(true);
    expect(got.dataBytes + got.zeroBytes).toBeLessThan(16 * MiB);
  });

  it('internal snapshots are left behind with a note naming how many; the active layer reads exactly', async () => {
    const file = at('snaps.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', file, String(16 * MiB));
    await qemuIo(file, scatter(16 * MiB, 11, 512, 20));
    await qemuImg('snapshot', '-c', 'one', file);
    await qemuIo(file, scatter(16 * MiB, 12, 512, 20));
    await qemuImg('snapshot', '-c', 'two', file);
    await qemuIo(file, scatter(16 * MiB, 13, 512, 20));
    const got = await decodeFile(file);
    expect(got.reader.notes.join('\n')).toMatch(/2 internal snapshots are not imported/);
    expect(got.bytes.equals(await rawOf(file))).toBe(true);
    // The active L2 tables were copied after the data they map: a stream reads it only within the bytes it holds, and else says so.
    const streamed = await decodeAll(forwardOnly(file)).catch((err: unknown) => err);
    if (streamed instanceof Error) expect(streamed).toBeInstanceOf(NotStreamableError);
    else expect((streamed as Decoded).bytes.equals(got.bytes)).toBe(true);
  });

  it('an image left dirty by a crash (lazy refcounts) reads, with a note', async () => {
    const file = at('dirty.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', file, String(4 * MiB));
    await qemuIo(file, [`write -s ${noise} 0 ${3 * 65536}`, 'abort']).catch(() => undefined);
    const got = await decodeFile(file);
    expect(got.reader.notes.join('\n')).toMatch(/marked dirty/);
    expect(got.dataBytes).toBe(3 * 65536);
    expect(got.bytes.equals(fs.readFileSync(noise).subarray(0, 4 * MiB).fill(0, 3 * 65536))).toBe(true);
  });

  it('clusters next to each other are read together: a 16 MiB image made by qemu-img convert takes a few large reads', async () => {
    const raw = at('dense.raw');
    fs.writeFileSync(raw, Buffer.concat(Array.from({ length: 4 }, () => fs.readFileSync(noise))));
    const file = at('dense.qcow2');
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, file);
    const inner = fileSource(file);
    const lengths: number[] = [];
    const counting: ByteSource = { ...inner, read: (offset, length) => (lengths.push(length), inner.read(offset, length)) };
    const got = await decodeAll(counting);
    expect(got.bytes.equals(fs.readFileSync(raw))).toBe(true);
    // Header, L1, one L2 table, then 4 MiB reads of data.
    expect(lengths.length).toBeLessThanOrEqual(3 + 4 + 1);
  });

  it('the format registry detects qcow2 from its magic', async () => {
    const file = at('detect.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', file, String(MiB));
    const src = fileSource(file);
    const reader = await openImage(src);
    expect([reader.format, reader.virtualSize]).toEqual(['qcow2', MiB]);
    await src.close();
  });
});
