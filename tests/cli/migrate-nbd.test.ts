import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/index.js';
import { hasTool, startServe, STRATA, tool, type ServeProcess } from '../nbd/support.js';
import { startQemuNbd } from '../migrate/qemu-nbd.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { buildCli } from './strata.js';

const MiB = 1 << 20;

interface QemuMapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

interface PushJson {
  job: number;
  size: number;
  bytesWritten: number;
  bytesZeroed: number;
  bytesAlreadyZero: number;
  sourceKept: boolean;
}

/** Whether qemu-img map says [start, start+length) of an image holds no data. */
function noDataIn(map: QemuMapEntry[], start: number, length: number): boolean {
  return map.filter((e) => e.start < start + length && e.start + e.length > start).every((e) => !e.data);
}

const haveTools = hasTool('qemu-nbd') && hasTool('qemu-img') && hasTool('qemu-io') && hasTool('nbdkit');

describe.skipIf(!haveTools)('strata migrate POOL/VOL nbd://…', () => {
  const { dir, cleanup } = scratchDir('migrate-nbd');
  const home = path.join(dir, 'h');
  const raw = path.join(dir, 'v.raw');
  let srv: ServeProcess | undefined;

  beforeAll(async () => {
    buildCli();
    await inProcess(home, ['pool', 'create', 'p', '--size', '1G']);
    await inProcess(home, ['volume', 'create', 'p/v', '64M']);
    // Data at 0–4M and 20–23M, zeroes written as data at 8–10M (a zero run inside data), a hole everywhere else (a discard at 21M included).
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    const uri = srv.uri.replace(/\/[^/]*$/, '/v');
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 4M', '-c', 'write -P 0 8M 2M', '-c', 'write -P 0x6b 20M 3M', '-c', 'discard 21M 1M', uri]);
    await srv.stop();
    srv = undefined;
    const map = await inProcessJson<Array<{ offset: number; length: number; type: string }>>(home, ['map', 'p/v']);
    expect(map.filter((r) => r.type === 'data').reduce((n, r) => n + r.length, 0)).toBe(8 * MiB);
    await inProcess(home, ['export', 'p/v', raw]);
  }, 120_000);
  afterAll(async () => {
    await srv?.stop();
    cleanup();
  });

  it('pushes into qemu-nbd serving a fresh qcow2: identical, holes and zero runs stay unallocated, the source kept', async () => {
    const img = path.join(dir, 't1.qcow2');
    await tool('qemu-img', ['create', '-f', 'qcow2', img, '64M']);
    const q = await startQemuNbd(img, 'qcow2', path.join(dir, 't1.sock'));
    let out: PushJson;
    try {
      out = await inProcessJson<PushJson>(home, ['migrate', 'p/v', q.uri]);
    } finally {
      await q.stop();
    }
    expect(out).toMatchObject({ size: 64 * MiB, bytesWritten: 6 * MiB, bytesZeroed: 0, sourceKept: true });
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', raw, img]);
    const map = JSON.parse(await tool('qemu-img', ['map', '--output=json', img])) as QemuMapEntry[];
    expect(noDataIn(map, 4 * MiB, 16 * MiB)).toBe(true);
    expect(noDataIn(map, 21 * MiB, MiB)).toBe(true);
    expect(noDataIn(map, 23 * MiB, 41 * MiB)).toBe(true);
    expect(noDataIn(map, 0, 4 * MiB)).toBe(false);
    expect((await inProcessJson<Array<{ name: string }>>(home, ['volume', 'list', 'p'])).map((v) => v.name)).toEqual(['v']);
    const jobs = await inProcessJson<Array<{ id: number; kind: string; state: string }>>(home, ['job', 'list', 'p']);
    expect(jobs.find((j) => j.id === out.job)).toMatchObject({ kind: 'migrate', state: 'done' });
  });

  it('pushes into an export that held other data, zeroing what must read zero, and says the source is kept', async () => {
    const img = path.join(dir, 't2.raw');
    fs.writeFileSync(img, Buffer.alloc(64 * MiB, 0x11));
    const q = await startQemuNbd(img, 'raw', path.join(dir, 't2.sock'));
    let text: string;
    try {
      text = await inProcess(home, ['migrate', 'p/v', q.uri]);
    } finally {
      await q.stop();
    }
    expect(text).toMatch(/^pushed p\/v \(64M\) to nbd\+unix:\/\/\/\?socket=.* as job \d+: 6M written, 58M zeroed without data, 0 already zero there in [0-9.]+ s; verified .*; p\/v is kept \(an NBD target is not a pool of this host\)\n$/);
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw, img]);
  });

  it('pushes into nbdkit without write-zeroes over old data, writing zero bytes where it must', async () => {
    const socket = path.join(dir, 'nk.sock');
    const nk = spawn('nbdkit', ['-f', '-U', socket, '--filter=nozero', 'data', '( 0x11 0x22 )*33554432'], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => nk.once('exit', () => resolve()));
    try {
      for (let i = 0; !fs.existsSync(socket); i++) {
        if (i > 400) throw new Error('nbdkit did not listen');
        await sleep(25);
      }
      const uri = `nbd+unix:///?socket=${socket}`;
      const out = await inProcessJson<PushJson & { zeroesSentAsData: boolean }>(home, ['migrate', 'p/v', uri]);
      expect(out).toMatchObject({ bytesWritten: 6 * MiB, bytesZeroed: 58 * MiB, zeroesSentAsData: true });
      await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw, uri]);
    } finally {
      nk.kill('SIGTERM');
      await exited;
    }
  });

  it('refuses a target smaller than the volume, naming both sizes', async () => {
    const img = path.join(dir, 't3.qcow2');
    await tool('qemu-img', ['create', '-f', 'qcow2', img, '32M']);
    const q = await startQemuNbd(img, 'qcow2', path.join(dir, 't3.sock'));
    try {
      expect(await inProcessFails(home, ['migrate', 'p/v', q.uri])).toMatch(/\(32M, 33554432 bytes\) is smaller than p\/v \(64M, 67108864 bytes\)/);
    } finally {
      await q.stop();
    }
    expect(await inProcessFails(home, ['migrate', 'p/v', 'nbds://h/x'])).toMatch(/TLS targets/);
    expect(await inProcessFails(home, ['migrate', 'p/v', 'nbd://127.0.0.1:1/x', '--online'])).toMatch(/pool 'p' is not served: --online mirrors/);
  });

  it('Ctrl-C stops a push held to --rate between chunks, and its job ends cancelled', async () => {
    const img = path.join(dir, 't4.qcow2');
    await tool('qemu-img', ['create', '-f', 'qcow2', img, '64M']);
    const q = await startQemuNbd(img, 'qcow2', path.join(dir, 't4.sock'));
    try {
      const child = spawn(process.execPath, [STRATA, '--home', home, 'migrate', 'p/v', q.uri, '--rate', '1M'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      type Job = { kind: string; state: string; rate?: number; bytesDone: number };
      const running = async (): Promise<Job | undefined> => (JSON.parse(await inProcess(home, ['--json', 'job', 'list', 'p'])) as Job[]).find((j) => j.kind === 'migrate' && j.state === 'running');
      for (let i = 0; !(await running()); i++) {
        if (i > 200) throw new Error(`no running push: ${stderr}`);
        await sleep(50);
      }
      child.kill('SIGINT');
      expect(await exited).toBe(1);
      expect(stderr).toMatch(/^strata: interrupted: the push of p\/v stopped and its job is cancelled; nbd\+unix:.* holds part of it \(push again to finish\)\n$/);
      const last = (JSON.parse(await inProcess(home, ['--json', 'job', 'list', 'p'])) as Job[]).filter((j) => j.kind === 'migrate').at(-1)!;
      expect(last).toMatchObject({ state: 'cancelled', rate: MiB });
      expect(last.bytesDone).toBeLessThan(64 * MiB);
    } finally {
      await q.stop();
    }
  });

  it('into a second strata serve (another home), and from a served pool through its server, refusing a volume in use', async () => {
    const home2 = path.join(dir, 'h2');
    await inProcess(home2, ['pool', 'create', 'q', '--size', '1G']);
    await inProcess(home2, ['volume', 'create', 'q/w', '64M']);
    const dst = await startServe(['--home', home2, 'q', '--listen', '127.0.0.1:0']);
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    try {
      const target = dst.uri.replace(/\/[^/]*$/, '/w');
      const out = await inProcessJson<PushJson>(home, ['migrate', 'p/v', target]);
      expect(out).toMatchObject({ bytesWritten: 6 * MiB, bytesZeroed: 0, sourceKept: true });
      await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw, target]);
      // The target volume stays thin: holes of the source are holes there.
      const map = await inProcessJson<Array<{ offset: number; length: number; type: string }>>(home2, ['map', 'q/w']);
      expect(map.filter((r) => r.type === 'data').reduce((n, r) => n + r.length, 0)).toBe(6 * MiB);
      // The push ran in p's server, as one of its jobs.
      expect((await inProcessJson<Array<{ id: number; kind: string; state: string; pid: number }>>(home, ['job', 'list', 'p'])).find((j) => j.id === out.job)).toMatchObject({ kind: 'migrate', state: 'done', pid: srv.child.pid });
      const port = Number(new URL(srv.uri).port);
      const client = await NbdClient.connect({ port, export: 'v' });
      try {
        expect(await inProcessFails(home, ['migrate', 'p/v', target])).toBe("volume 'p/v' has 1 connected client: a push of a volume in use needs --online (or disconnect it first)");
      } finally {
        await client.disconnect();
      }
    } finally {
      await srv.stop();
      srv = undefined;
      await dst.stop();
    }
  });
});
