import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../support/scratch.js';
import { expectBytesEqual, hasTool, startServe, tool, type ServeProcess } from './support.js';

const MiB = 1024 * 1024;
const scratch = scratchDir('nbd-qemu');
const haveQemu = hasTool('qemu-img') && hasTool('qemu-io');

/** A 256 MiB raw image: random data in about two thirds of its 1 MiB blocks, holes elsewhere. */
function randomSparseImage(file: string, size: number): { start: number; length: number }[] {
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, size);
  const block = Buffer.alloc(MiB);
  const written: { start: number; length: number }[] = [];
  for (let i = 0; i < size / MiB; i++) {
    if (i % 3 === 1) continue;
    crypto.randomFillSync(block);
    fs.writeSync(fd, block, 0, MiB, i * MiB);
    const last = written.at(-1);
    if (last && last.start + last.length === i * MiB) last.length += MiB;
    else written.push({ start: i * MiB, length: MiB });
  }
  fs.closeSync(fd);
  return written;
}

interface MapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

describe.skipIf(!haveQemu)('qemu-img and qemu-io against strata serve', () => {
  let mem: ServeProcess;
  const src = path.join(scratch.dir, 'src.raw');
  let dataRuns: { start: number; length: number }[];

  beforeAll(async () => {
    dataRuns = randomSparseImage(src, 256 * MiB);
    mem = await startServe(['--memory', '256M', '--listen', '127.0.0.1:0', '--export', 'vm1']);
  });

  afterAll(async () => {
    await mem?.stop();
    scratch.cleanup();
  });

  it('prints the nbd:// URI and a ready qemu-system-x86_64 line', () => {
    expect(mem.uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/vm1$/);
    expect(mem.lines[1]).toBe(`qemu-system-x86_64 -drive file=${mem.uri},format=raw,if=virtio`);
  });

  it('qemu-img info sees the size and structured replies', async () => {
    const out = await tool('qemu-img', ['info', '--output=json', mem.uri]);
    expect(JSON.parse(out)['virtual-size']).toBe(256 * MiB);
  });

  it('converts a random 256 MiB image in and out byte for byte, and qemu-img map sees the holes', async () => {
    await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, mem.uri]);
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, mem.uri]);
    const map = JSON.parse(await tool('qemu-img', ['map', '--output=json', '-f', 'raw', mem.uri])) as MapEntry[];
    const data = map.filter((e) => e.data).map((e) => ({ start: e.start, length: e.length }));
    expect(data).toEqual(dataRuns);
    expect(map.filter((e) => !e.data).every((e) => e.zero)).toBe(true);
    const out = path.join(scratch.dir, 'out.raw');
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', mem.uri, out]);
    expectBytesEqual(fs.readFileSync(out), fs.readFileSync(src), 'image converted back out');
  });

  it('qemu-io writes, zeroes and discards patterns and reads them back verified with -P', async () => {
    const io = (...cmds: string[]) => tool('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), mem.uri]);
    await io('write -P 0xa5 0 64k', 'write -P 0x5a 1M 3M', 'write -P 0x11 4097 511', 'aio_write -P 0x22 8M 1M', 'aio_write -P 0x33 9M 1M', 'aio_flush');
    const out = await io('read -P 0xa5 0 4097', 'read -P 0x11 4097 511', 'read -P 0xa5 4608 60928', 'read -P 0x5a 1M 3M', 'read -P 0x22 8M 1M', 'read -P 0x33 9M 1M');
    expect(out).not.toMatch(/Pattern verification failed|error/i);
    await io('write -z 1M 1M', 'write -z -u 2M 1M', 'discard 8M 1M');
    const after = await io('read -P 0 1M 2M', 'read -P 0x5a 3M 1M');
    expect(after).not.toMatch(/Pattern verification failed|error/i);
    // The check can fail: a wrong pattern is caught.
    await expect(io('read -P 0x77 3M 4k')).rejects.toThrow(/Pattern verification failed/);
  });

  it('two qemu-io clients write disjoint ranges at once; after a flush on one, the data is in the file seen from the other', async () => {
    const file = path.join(scratch.dir, 'shared.raw');
    fs.writeFileSync(file, Buffer.alloc(0));
    fs.truncateSync(file, 64 * MiB);
    const s = await startServe(['--file', file, '--listen', '127.0.0.1:0']);
    try {
      expect(s.uri).toMatch(/\/shared$/);
      const writer = (pat: number, base: number) =>
        tool('qemu-io', ['-f', 'raw', ...[0, 1, 2, 3].flatMap((i) => ['-c', `aio_write -P ${pat} ${base + i * 4 * MiB} 2M`]), '-c', 'aio_flush', s.uri]);
      await Promise.all([writer(0x61, 0), writer(0x62, 2 * MiB)]);
      await tool('qemu-io', ['-f', 'raw', '-c', 'flush', s.uri]);
      const verify = await tool('qemu-io', ['-f', 'raw', ...[0, 1, 2, 3].flatMap((i) => ['-c', `read -P 0x61 ${i * 4 * MiB} 2M`, '-c', `read -P 0x62 ${i * 4 * MiB + 2 * MiB} 2M`]), s.uri]);
      expect(verify).not.toMatch(/Pattern verification failed/);
      const bytes = fs.readFileSync(file);
      for (let i = 0; i < 4; i++) {
        expect(bytes.subarray(i * 4 * MiB, i * 4 * MiB + 2 * MiB).every((b) => b === 0x61)).toBe(true);
        expect(bytes.subarray(i * 4 * MiB + 2 * MiB, (i + 1) * 4 * MiB).every((b) => b === 0x62)).toBe(true);
      }
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });
});
