import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scratchDir } from '../support/scratch.js';
import { hasTool, startServe, STRATA, tool, type ServeProcess } from './support.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const O_DIRECT = 0o40000;
const scratch = scratchDir('nbd-direct');
const home = path.join(scratch.dir, 'home');
const haveQemu = hasTool('qemu-img') && hasTool('qemu-io');

async function strata(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [STRATA, '--home', home, ...args], { timeout: 30_000 });
  return stdout;
}

/** The open flags of the server's descriptors on `file`: a served pool holds it open the whole time. */
function serverFlags(s: ServeProcess, file: string): number[] {
  const pid = s.child.pid!;
  const target = fs.realpathSync(file);
  return fs
    .readdirSync(`/proc/${pid}/fd`)
    .filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === target;
      } catch {
        return false;
      }
    })
    .map((fd) => parseInt(/^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))![1]!, 8));
}

/** qemu-io writes at unaligned offsets, then reads each pattern back (qemu-io -c 'read -P' fails on a mismatch). */
async function unalignedRoundTrip(uri: string): Promise<void> {
  const spans: [number, number, number][] = [[1, 511, 0x11], [1000, 3000, 0x22], [4095, 2, 0x33], [MiB - 7, 70_000, 0x44], [3 * MiB + 513, 2 * MiB + 3, 0x55]];
  const writes = spans.flatMap(([o, n, p]) => ['-c', `write -P ${p} ${o} ${n}`]);
  await tool('qemu-io', ['-f', 'raw', ...writes, uri]);
  const reads = spans.flatMap(([o, n, p]) => ['-c', `read -P ${p} ${o} ${n}`]);
  const out = await tool('qemu-io', ['-f', 'raw', '-r', ...reads, '-c', 'read -P 0 512 488', '-c', 'read -P 0 4097 100', uri]);
  expect(out).not.toMatch(/Pattern verification failed|error/i);
}

describe('strata serve --cache none', () => {
  beforeAll(async () => {
    await strata('pool', 'create', 'p0', '--size', '256M', '--path', path.join(scratch.dir, 'p0.pool'));
    await strata('volume', 'create', 'p0/vm1', '64M');
    await strata('pool', 'create', 'r1', '--size', '64M', '--raid', '1', '--members', ['m0', 'm1'].map((m) => path.join(scratch.dir, m)).join(','));
    await strata('volume', 'create', 'r1/disk', '32M');
  });

  afterAll(() => scratch.cleanup());

  it.skipIf(!haveQemu)('serves a pool through O_DIRECT: unaligned qemu-io writes and an image copied in read back exactly, also after a restart', async () => {
    const src = path.join(scratch.dir, 'src.raw');
    fs.writeFileSync(src, Buffer.alloc(0));
    fs.truncateSync(src, 64 * MiB);
    const fd = fs.openSync(src, 'r+');
    for (let i = 8; i < 64; i += 16) fs.writeSync(fd, crypto.randomBytes(3 * MiB + 1234), 0, 3 * MiB + 1234, i * MiB + 77);
    fs.closeSync(fd);
    const s = await startServe(['--home', home, 'p0', '--listen', '127.0.0.1:0', '--cache', 'none']);
    try {
      const flags = serverFlags(s, path.join(scratch.dir, 'p0.pool'));
      expect(flags).toHaveLength(1);
      expect(flags[0]! & O_DIRECT).toBe(O_DIRECT);
      await unalignedRoundTrip(s.uri);
      // Over the first 8 MiB, which the round trip used, then the random image.
      await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, s.uri]);
      await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, s.uri]);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    const again = await startServe(['--home', home, 'p0', '--listen', '127.0.0.1:0', '--read-only']);
    try {
      expect(serverFlags(again, path.join(scratch.dir, 'p0.pool'))[0]! & O_DIRECT).toBe(0);
      await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, again.uri]);
    } finally {
      expect(await again.stop()).toBe(0);
    }
  });

  it.skipIf(!haveQemu)('opens every RAID member, one added while served, and a --file with O_DIRECT', async () => {
    const s = await startServe(['--home', home, 'r1', '--listen', '127.0.0.1:0', '--cache', 'none']);
    try {
      for (const m of ['m0', 'm1']) expect(serverFlags(s, path.join(scratch.dir, m))[0]! & O_DIRECT, m).toBe(O_DIRECT);
      await unalignedRoundTrip(s.uri);
      // Through the server's control socket: the server opens the new member, the way it opened the others.
      await strata('raid', 'add', '--pool', 'r1', path.join(scratch.dir, 'spare'));
      expect(serverFlags(s, path.join(scratch.dir, 'spare'))[0]! & O_DIRECT).toBe(O_DIRECT);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    const raw = path.join(scratch.dir, 'disk.raw');
    fs.writeFileSync(raw, Buffer.alloc(0));
    fs.truncateSync(raw, 8 * MiB);
    const f = await startServe(['--file', raw, '--listen', '127.0.0.1:0', '--cache', 'none']);
    try {
      expect(serverFlags(f, raw)[0]! & O_DIRECT).toBe(O_DIRECT);
      await unalignedRoundTrip(f.uri);
    } finally {
      expect(await f.stop()).toBe(0);
    }
    const bytes = fs.readFileSync(raw);
    expect(bytes.subarray(1000, 4000).every((b) => b === 0x22)).toBe(true);
    expect(bytes.subarray(4000, 4095).every((b) => b === 0)).toBe(true);
  });

  it('refuses --cache with a value it does not know, and --cache none with --memory', async () => {
    await expect(run(process.execPath, [STRATA, 'serve', '--memory', '1M', '--cache', 'directsync'])).rejects.toMatchObject({ code: 2 });
    await expect(run(process.execPath, [STRATA, 'serve', '--memory', '1M', '--cache', 'none', '--listen', '127.0.0.1:0'])).rejects.toMatchObject({
      code: 1,
      stderr: 'strata: --cache none applies to pools and --file, not to --memory\n',
    });
  });
});
