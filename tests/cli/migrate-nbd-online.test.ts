import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/index.js';
import { hasTool, parseFio, startServe, STRATA, tool, type ServeProcess } from '../nbd/support.js';
import { startQemuNbd, type QemuNbd } from '../migrate/qemu-nbd.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess } from './in-process.js';
import { buildCli } from './strata.js';

const MiB = 1 << 20;

/** `strata migrate … --online` as a child: its stdout lines, and how it ended. */
function migrateOnline(home: string, ref: string, uri: string, extra: string[] = []): { lines: string[]; ready: Promise<string>; done: Promise<{ code: number | null; stderr: string }> } {
  const child = spawn(process.execPath, [STRATA, '--home', home, 'migrate', ref, uri, '--online', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines: string[] = [];
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) => child.once('exit', (code) => resolve({ code, stderr })));
  const ready = new Promise<string>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on('line', (l) => {
      lines.push(l);
      if (/ready: the VM may be migrated/.test(l)) resolve(l);
    });
    void done.then((r) => reject(new Error(`strata migrate ended before it was ready (${r.code}): ${lines.join('\n')} ${r.stderr}`)));
  });
  ready.catch(() => undefined);
  return { lines, ready, done };
}

const haveTools = hasTool('fio') && hasTool('qemu-nbd') && hasTool('qemu-img');

describe.skipIf(!haveTools)('strata migrate POOL/VOL nbd://… --online under fio', () => {
  const { dir, cleanup } = scratchDir('migrate-nbd-online');
  const home = path.join(dir, 'h');
  let srv: ServeProcess;
  let port = 0;
  const held: QemuNbd[] = [];

  beforeAll(async () => {
    buildCli();
    await inProcess(home, ['pool', 'create', 'p', '--size', '1G']);
    await inProcess(home, ['volume', 'create', 'p/v', '64M']);
    const raw = path.join(dir, 'v.raw');
    fs.writeFileSync(raw, Buffer.concat([Buffer.alloc(24 * MiB, 0x3c), Buffer.alloc(8 * MiB)]));
    await inProcess(home, ['import', '--force', 'p/v', raw]);
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    port = Number(new URL(srv.uri).port);
  }, 120_000);
  afterAll(async () => {
    for (const q of held) await q.stop();
    await srv?.stop();
    cleanup();
  });

  async function target(name: string): Promise<{ img: string; q: QemuNbd }> {
    const img = path.join(dir, `${name}.qcow2`);
    await tool('qemu-img', ['create', '-f', 'qcow2', img, '64M']);
    const q = await startQemuNbd(img, 'qcow2', path.join(dir, `${name}.sock`));
    held.push(q);
    return { img, q };
  }

  it('fio verifies with zero errors, the target is in sync at ready and equal to the volume once the clients left', async () => {
    const { img, q } = await target('t1');
    // A client of the volume that stays until the test lets it go: the job ends only after the last one.
    const guest = await NbdClient.connect({ port, export: 'v' });
    const push = migrateOnline(home, 'p/v', q.uri, ['--rate', '16M']);
    const fio = tool('fio', [
      '--name=mirror', '--ioengine=nbd', `--uri=nbd://127.0.0.1:${port}/v`, '--rw=randwrite', '--bsrange=4k-64k', '--iodepth=16', '--offset=8M',
      '--size=48M', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json',
    ]);
    const ready = await push.ready;
    expect(ready).toMatch(/^p\/v is in sync with nbd\+unix:.* \(job \d+\): every write is mirrored from now on; ready: the VM may be migrated$/);
    const [job] = parseFio(await fio);
    expect(job!.error).toBe(0);
    await guest.disconnect();
    const end = await push.done;
    expect(end).toEqual({ code: 0, stderr: '' });
    expect(push.lines.at(-1)).toMatch(/^pushed p\/v \(64M\) to .* online: .* then mirrored until its last client disconnected; the target is flushed; p\/v is kept/);
    await q.stop();
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', `nbd://127.0.0.1:${port}/v`, img]);
    await tool('qemu-img', ['check', img]);
    expect(JSON.parse(await inProcess(home, ['--json', 'pool', 'check', 'p'])) as { clean: boolean }).toMatchObject({ clean: true, problems: [] });
  }, 120_000);

  it('job cancel while in sync ends the push cancelled; the clients go on', async () => {
    const { q } = await target('t2');
    const guest = await NbdClient.connect({ port, export: 'v' });
    const push = migrateOnline(home, 'p/v', q.uri);
    const id = /\(job (\d+)\)/.exec(await push.ready)![1]!;
    await inProcess(home, ['job', 'cancel', 'p', id]);
    const end = await push.done;
    expect(end.code).toBe(1);
    expect(end.stderr).toBe(`strata: job ${id} was cancelled\n`);
    const jobs = JSON.parse(await inProcess(home, ['--json', 'job', 'list', 'p'])) as Array<{ id: number; kind: string; state: string }>;
    expect(jobs.find((j) => j.id === Number(id))).toMatchObject({ kind: 'migrate', state: 'cancelled' });
    // The guest's connection saw nothing of it.
    await guest.write(Buffer.alloc(4096, 9), 0);
    expect((await guest.read(0, 4096)).equals(Buffer.alloc(4096, 9))).toBe(true);
    await guest.disconnect();
  }, 120_000);
});
