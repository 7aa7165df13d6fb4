import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { FileDevice } from '../../src/blockdev/index.js';
import { NbdClient, type NbdServerStats } from '../../src/nbd/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { scratchDir } from '../support/scratch.js';
import { CMD_READ } from '../../src/nbd/constants.js';
import { hasTool, RawPeer, startServe, STRATA, tool } from './support.js';
import { go, request } from './wire.js';

const run = promisify(execFile);
const scratch = scratchDir('nbd-cli');
afterAll(() => scratch.cleanup());

function rawFile(name: string, size: number): string {
  const p = path.join(scratch.dir, name);
  fs.writeFileSync(p, Buffer.alloc(0));
  fs.truncateSync(p, size);
  return p;
}

async function failing(args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, [STRATA, 'serve', ...args], { timeout: 10_000 });
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
  throw new Error('strata serve succeeded');
}

describe('strata serve', () => {
  it('serves a file under its base name and as the default export, and on SIGINT flushes, unlocks and exits 0', async () => {
    const file = rawFile('vm-disk.raw', 4 * 1024 * 1024);
    const s = await startServe(['--file', file, '--listen', '127.0.0.1:0']);
    expect(s.uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/vm-disk$/);
    const port = Number(/:(\d+)\//.exec(s.uri)![1]);
    const byName = await NbdClient.connect({ port, export: 'vm-disk' });
    await byName.write(pattern(65536, 4), 65536, { fua: true });
    const byDefault = await NbdClient.connect({ port, export: '' });
    expect(byDefault.details).toMatchObject({ name: 'vm-disk', description: 'raw image vm-disk.raw' });
    expect((await byDefault.read(65536, 65536)).equals(pattern(65536, 4))).toBe(true);
    // The file is locked while served.
    expect(() => FileDevice.open(file)).toThrow(/locked/);
    await byName.disconnect();
    // A client still connected at shutdown does not keep the server alive.
    expect(await s.stop('SIGINT')).toBe(0);
    const dev = FileDevice.open(file);
    const back = Buffer.alloc(65536);
    await dev.read(back, 65536);
    await dev.close();
    expect(back.equals(pattern(65536, 4))).toBe(true);
    byDefault.destroy();
  });

  it('listens on a Unix socket and prints an nbd+unix URI that qemu-img opens', async () => {
    const sock = path.join(scratch.dir, 'nbd.sock');
    const s = await startServe(['--memory', '16M', '--socket', sock, '--export', 'scratch']);
    try {
      expect(s.uri).toBe(`nbd+unix:///scratch?socket=${sock}`);
      if (hasTool('qemu-img')) expect(await tool('qemu-img', ['info', s.uri])).toMatch(/virtual size: 16 MiB/);
      const c = await NbdClient.connect({ socket: sock, export: 'scratch' });
      expect(c.size).toBe(16 * 1024 * 1024);
      await c.disconnect();
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('listens on IPv6 loopback and prints the address in brackets', async () => {
    const s = await startServe(['--memory', '8M', '--listen', '[::1]:0']);
    try {
      expect(s.uri).toMatch(/^nbd:\/\/\[::1\]:\d+\/memory$/);
      const c = await NbdClient.connect({ host: '::1', port: Number(/:(\d+)\//.exec(s.uri)![1]), export: 'memory' });
      expect(c.size).toBe(8 * 1024 * 1024);
      await c.disconnect();
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  it('--read-only refuses writes from a real client', async () => {
    const file = rawFile('ro.raw', 1024 * 1024);
    const s = await startServe(['--file', file, '--listen', '127.0.0.1:0', '--read-only']);
    try {
      const c = await NbdClient.connect({ port: Number(/:(\d+)\//.exec(s.uri)![1]), export: 'ro' });
      await expect(c.write(Buffer.alloc(512, 1), 0)).rejects.toThrow();
      await c.disconnect();
      if (hasTool('qemu-io')) await expect(tool('qemu-io', ['-f', 'raw', '-c', 'write 0 512', s.uri])).rejects.toThrow(/read-only|Operation not permitted|EPERM|permission/i);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    expect(fs.readFileSync(file).every((b) => b === 0)).toBe(true);
  });

  it('keeps its memory bounded while a client pipelines reads and never reads the replies', async () => {
    const s = await startServe(['--memory', '64M', '--listen', '127.0.0.1:0']);
    const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${s.child.pid}/status`, 'utf8'))![1]) * 1024;
    const p = await RawPeer.connect(Number(/:(\d+)\//.exec(s.uri)![1]));
    try {
      await go(p, 'memory');
      p.socket.pause();
      const before = rss();
      // 3 GiB of replies asked for.
      const batch: Buffer[] = [];
      for (let i = 0; i < 3072; i++) batch.push(request(CMD_READ, 0, BigInt(i), (i % 64) * 1024 * 1024, 1024 * 1024));
      p.send(...batch);
      await new Promise((r) => setTimeout(r, 2000));
      expect(rss() - before).toBeLessThan(400 * 1024 * 1024);
    } finally {
      p.destroy();
      expect(await s.stop()).toBe(0);
    }
  });

  it('refuses bad arguments with one line and exit status 1', async () => {
    const missing = await failing(['--file', path.join(scratch.dir, 'nope.raw'), '--listen', '127.0.0.1:0']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^strata: .*nope\.raw/);
    expect((await failing(['--memory', '1M', '--listen', 'localhost'])).stderr).toMatch(/^strata: invalid --listen 'localhost'/);
    expect((await failing(['--memory', '1M', '--tls', 'on'])).stderr).toMatch(/^strata: --tls on needs --tls-cert/);
    expect((await failing(['--memory', '1M', '--tls', 'require', '--tls-psk', path.join(scratch.dir, 'none.psk')])).stderr).toMatch(/^strata: cannot read TLS PSK file/);
    expect((await failing(['--memory', '1M', '--file', 'x.raw'])).stderr).toMatch(/^strata: give one of --file PATH or --memory SIZE, not both/);
    expect((await failing(['--memory', '1M', '--max-buffer', '16M'])).stderr).toMatch(/^strata: --max-buffer 16M is below the minimum of 64M/);
    expect((await failing(['--memory', '1M', '--idle-timeout', 'soon'])).stderr).toMatch(/^strata: invalid --idle-timeout 'soon'/);
    expect((await failing(['--memory', '1M', '--max-connections-per-address', '-1'])).stderr).toMatch(/^strata: invalid --max-connections-per-address '-1'/);
    for (const r of [missing]) expect(r.stderr.trim().split('\n').length).toBe(1);
  });

  it('caps connections per address, and reports what it turned away on SIGUSR1 and when it stops', async () => {
    const s = await startServe(['--memory', '1M', '--listen', '127.0.0.1:0', '--max-connections-per-address', '1', '--max-buffer', '128M']);
    const port = Number(/:(\d+)\//.exec(s.uri)![1]);
    const first = await RawPeer.connect(port);
    try {
      await first.read(18);
      const second = await RawPeer.connect(port);
      await second.closedByServer();
      s.child.kill('SIGUSR1');
      await vi.waitFor(() => expect(s.stderr()).toMatch(/"stats"/));
      const stats = JSON.parse(s.stderr().split('\n').find((l) => l.startsWith('{'))!) as { stats: NbdServerStats };
      expect(stats.stats.refused.perAddressLimit).toBe(1);
      expect(stats.stats.budget.total).toBe(128 * 1024 * 1024);
    } finally {
      first.destroy();
      expect(await s.stop()).toBe(0);
    }
    expect(s.stderr()).toMatch(/^strata serve: 1 refused at --max-connections-per-address$/m);
  });

  it('refuses to start a second server on a socket that is in use', async () => {
    const sock = path.join(scratch.dir, 'busy.sock');
    const s = await startServe(['--memory', '1M', '--socket', sock]);
    try {
      expect((await failing(['--memory', '1M', '--socket', sock])).stderr).toMatch(/in use/);
    } finally {
      await s.stop();
    }
  });
});
