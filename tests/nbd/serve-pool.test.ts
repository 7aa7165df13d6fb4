import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/index.js';
import { scratchDir } from '../support/scratch.js';
import { expectBytesEqual, hasTool, startServe, STRATA, tool } from './support.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const scratch = scratchDir('nbd-pool');
const home = path.join(scratch.dir, 'home');
const haveQemu = hasTool('qemu-img');

async function strata(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [STRATA, '--home', home, ...args], { timeout: 30_000 });
  return stdout;
}

const portOf = (uri: string) => Number(/:(\d+)\//.exec(uri)![1]);

describe('strata serve POOL', () => {
  beforeAll(async () => {
    await strata('pool', 'create', 'p0', '--size', '512M', '--path', path.join(scratch.dir, 'p0.pool'));
    await strata('volume', 'create', 'p0/vm1', '128M');
    await strata('volume', 'create', 'p0/vm2', '16M');
    await strata('pool', 'create', 'p1', '--size', '256M', '--path', path.join(scratch.dir, 'p1.pool'));
    await strata('volume', 'create', 'p1/data', '16M');
  });

  afterAll(() => scratch.cleanup());

  it.skipIf(!haveQemu)('serves each volume by name: a random image goes in and out byte for byte, holes stay holes, and the pool keeps it', async () => {
    const src = path.join(scratch.dir, 'src.raw');
    const fd = fs.openSync(src, 'w');
    fs.ftruncateSync(fd, 128 * MiB);
    for (let i = 0; i < 128; i += 8) fs.writeSync(fd, crypto.randomBytes(2 * MiB), 0, 2 * MiB, i * MiB);
    fs.closeSync(fd);
    const s = await startServe(['--home', home, 'p0', '--listen', '127.0.0.1:0']);
    try {
      expect(s.uri).toMatch(/\/vm1$/);
      expect((await NbdClient.list({ port: portOf(s.uri) })).map((e) => e.name)).toEqual(['vm1', 'vm2']);
      await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, s.uri]);
      await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, s.uri]);
      const map = JSON.parse(await tool('qemu-img', ['map', '--output=json', '-f', 'raw', s.uri])) as { length: number; data: boolean }[];
      expect(map.filter((e) => e.data).reduce((n, e) => n + e.length, 0)).toBe(32 * MiB);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    // The data is in the pool: served again, it reads back the same.
    const again = await startServe(['--home', home, 'p0', '--listen', '127.0.0.1:0', '--read-only', '--export', 'vm1']);
    try {
      const out = path.join(scratch.dir, 'out.raw');
      await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', again.uri, out]);
      expectBytesEqual(fs.readFileSync(out), fs.readFileSync(src), 'volume read back after a restart');
      const c = await NbdClient.connect({ port: portOf(again.uri), export: 'vm1' });
      await expect(c.write(Buffer.alloc(512), 0)).rejects.toThrow();
      await c.disconnect();
    } finally {
      expect(await again.stop()).toBe(0);
    }
    expect(await strata('volume', 'info', 'p0/vm1')).toMatch(/allocated: 32M/);
  });

  it('names volumes pool/volume when serving several pools, and --export picks among them', async () => {
    const s = await startServe(['--home', home, 'p0', 'p1', '--listen', '127.0.0.1:0', '--export', 'p1/data', '--export', 'p0/vm2']);
    try {
      expect(s.uri).toMatch(/\/p1\/data$/);
      expect((await NbdClient.list({ port: portOf(s.uri) })).map((e) => e.name)).toEqual(['p1/data', 'p0/vm2']);
      const c = await NbdClient.connect({ port: portOf(s.uri), export: 'p0/vm2' });
      expect(c.size).toBe(16 * MiB);
      await c.disconnect();
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it.skipIf(!hasTool('fio'))('fio random 4K writes with crc32c verify on a volume', async () => {
    const s = await startServe(['--home', home, 'p1', '--listen', '127.0.0.1:0']);
    try {
      const out = await tool('fio', [
        '--name=vol', '--ioengine=nbd', `--uri=${s.uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=16M',
        '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json',
      ]);
      const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { error: number; read: { io_bytes: number } }[] }).jobs[0]!;
      expect(job.error).toBe(0);
      expect(job.read.io_bytes).toBe(16 * MiB);
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('refuses an unknown pool or volume with one line', async () => {
    const fail = async (args: string[]) => {
      try {
        await run(process.execPath, [STRATA, '--home', home, 'serve', ...args], { timeout: 10_000 });
      } catch (err) {
        return (err as { stderr: string }).stderr;
      }
      throw new Error('strata serve succeeded');
    };
    expect(await fail(['p0', '--export', 'nope', '--listen', '127.0.0.1:0'])).toMatch(/^strata: no volume 'nope' to serve \(there are: vm1, vm2\)\n$/);
    expect(await fail(['nopool', '--listen', '127.0.0.1:0'])).toMatch(/^strata: .*nopool/);
  });
});
