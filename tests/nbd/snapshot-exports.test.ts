import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withPool } from '../../src/host/open-pool.js';
import { NbdClient } from '../../src/nbd/index.js';
import type { Pool } from '../../src/qcowlike/index.js';
import { AdminError } from '../../src/host/admin.js';
import { releaseFrozenExport } from '../../src/host/export-clients.js';
import { PoolExportSource } from '../../src/host/pool-exports.js';
import * as K from '../../src/nbd/constants.js';
import { NbdServer } from '../../src/nbd/index.js';
import { cloneVolume, convertToTemplate, createSnapshots, deleteSnapshot, templateFrom } from '../../src/snapshot/index.js';
import { memoryPool } from '../support/pool.js';
import { scratchDir } from '../support/scratch.js';
import { hasTool, nbdsh, RawPeer, READ_ONLY_PROBE, startServe, STRATA, tool, type ServeProcess } from './support.js';
import { goData, greet, option, optReply } from './wire.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const SIZE = 16 * MiB;

const scratch = scratchDir('nbd-snapshots');
const home = path.join(scratch.dir, 'home');
let served: ServeProcess | undefined;
let port = 0;
const uri = (name: string): string => `nbd://127.0.0.1:${port}/${name}`;

async function strata(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [STRATA, '--home', home, ...args], { timeout: 30_000 });
  return stdout;
}

async function write(pool: Pool, volume: string, byte: number, offset: number, length: number): Promise<void> {
  const v = await pool.openVolume(volume);
  try {
    await v.write(Buffer.alloc(length, byte), offset);
    await v.flush();
  } finally {
    await v.close();
  }
}

/** A raw image of what an export must read as: `runs` of [byte, offset, length], the rest zero. */
function image(name: string, runs: Array<[number, number, number]>): string {
  const file = path.join(scratch.dir, `${name}.raw`);
  const b = Buffer.alloc(SIZE);
  for (const [byte, offset, length] of runs) b.fill(byte, offset, offset + length);
  fs.writeFileSync(file, b);
  return file;
}

type DepthEntry = { offset: number; length: number; type: number };
async function depthMap(name: string): Promise<Array<[number, number, number]>> {
  const entries = JSON.parse(await tool('nbdinfo', ['--json', '--map=qemu:allocation-depth', uri(name)])) as DepthEntry[];
  return entries.map((e) => [e.offset, e.length, e.type]);
}

describe('snapshot, clone and template exports of a served pool', () => {
  beforeAll(async () => {
    await strata('pool', 'create', 'p0', '--size', '256M', '--path', path.join(scratch.dir, 'p0.pool'));
    await strata('volume', 'create', 'p0/vm1', '16M');
    await withPool(home, 'p0', { readOnly: false }, async ({ pool }) => {
      await write(pool, 'vm1', 1, 0, MiB);
      await createSnapshots(pool, [{ volume: 'vm1', snapshot: 's1' }]);
      await write(pool, 'vm1', 2, MiB / 2, MiB);
      await createSnapshots(pool, [{ volume: 'vm1', snapshot: 's2' }]);
      await write(pool, 'vm1', 3, 4 * MiB, MiB);
      await cloneVolume(pool, { volume: 'vm1', snapshot: 's1' }, 'c1');
      await write(pool, 'c1', 4, 8 * MiB, MiB);
      await templateFrom(pool, { volume: 'vm1' }, 'gold');
    });
    served = await startServe(['--home', home, 'p0', '--listen', '127.0.0.1:0']);
    port = Number(/:(\d+)\//.exec(served.uri)![1]);
  });

  afterAll(async () => {
    if (served) expect(await served.stop()).toBe(0);
    scratch.cleanup();
  });

  it('lists the volumes, each snapshot as VOL@SNAP and the template by name', async () => {
    const names = (await NbdClient.list({ port })).map((e) => e.name);
    expect(names).toEqual(expect.arrayContaining(['vm1', 'c1', 'vm1@s1', 'vm1@s2', 'gold']));
    expect(names.indexOf('vm1')).toBeLessThan(names.indexOf('vm1@s1'));
  });

  it.skipIf(!hasTool('qemu-img'))('each reads as its point in time (qemu-img compare), and a write to the volume leaves its snapshots as they were', async () => {
    const s1 = image('s1', [[1, 0, MiB]]);
    const s2 = image('s2', [
      [1, 0, MiB],
      [2, MiB / 2, MiB],
    ]);
    const now = image('now', [
      [1, 0, MiB],
      [2, MiB / 2, MiB],
      [3, 4 * MiB, MiB],
    ]);
    const clone = image('c1', [
      [1, 0, MiB],
      [4, 8 * MiB, MiB],
    ]);
    for (const [file, name] of [
      [s1, 'vm1@s1'],
      [s2, 'vm1@s2'],
      [now, 'vm1'],
      [now, 'gold'],
      [clone, 'c1'],
    ] as const) {
      await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', file, uri(name)]);
    }
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 9 0 64k', uri('vm1')]);
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', s1, uri('vm1@s1')]);
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', now, uri('gold')]);
    // A clone sees its base's data as data (qemu-img map), and its own write.
    const map = JSON.parse(await tool('qemu-img', ['map', '--output=json', '-f', 'raw', uri('c1')])) as Array<{ start: number; length: number; data: boolean }>;
    const data = map.filter((e) => e.data).map((e) => [e.start, e.length]);
    expect(data).toEqual([
      [0, MiB],
      [8 * MiB, MiB],
    ]);
    await expect(tool('qemu-io', ['-f', 'raw', '-c', 'write 0 4k', uri('vm1@s1')])).rejects.toThrow(/Permission denied|Operation not permitted|read-only/);
  });

  it.skipIf(!hasTool('nbdinfo'))('nbdinfo --map=qemu:allocation-depth names the layer each range of a snapshot, the volume and a clone comes from; --map gives base:allocation', async () => {
    expect(await depthMap('vm1@s1')).toEqual([
      [0, MiB, 1],
      [MiB, SIZE - MiB, 0],
    ]);
    expect(await depthMap('vm1@s2')).toEqual([
      [0, MiB / 2, 2],
      [MiB / 2, MiB, 1],
      [(3 * MiB) / 2, SIZE - (3 * MiB) / 2, 0],
    ]);
    // The volume and a clone read through their chains: each range names the layer that holds it. The
    // volume's chain is its top (holding what was written since the template), gold, s2, s1.
    const c = await NbdClient.connect({ port, export: 'vm1' });
    await c.write(Buffer.alloc(64 * 1024, 9), 0);
    await c.disconnect();
    expect(await depthMap('vm1')).toEqual([
      [0, 64 * 1024, 1],
      [64 * 1024, MiB / 2 - 64 * 1024, 4],
      [MiB / 2, MiB, 3],
      [(3 * MiB) / 2, 4 * MiB - (3 * MiB) / 2, 0],
      [4 * MiB, MiB, 2],
      [5 * MiB, SIZE - 5 * MiB, 0],
    ]);
    expect(await depthMap('c1')).toEqual([
      [0, MiB, 2],
      [MiB, 7 * MiB, 0],
      [8 * MiB, MiB, 1],
      [9 * MiB, SIZE - 9 * MiB, 0],
    ]);
    expect(await depthMap('gold')).toEqual([
      [0, MiB / 2, 3],
      [MiB / 2, MiB, 2],
      [(3 * MiB) / 2, 4 * MiB - (3 * MiB) / 2, 0],
      [4 * MiB, MiB, 1],
      [5 * MiB, SIZE - 5 * MiB, 0],
    ]);
    const alloc = JSON.parse(await tool('nbdinfo', ['--json', '--map', uri('vm1@s2')])) as DepthEntry[];
    expect(alloc.filter((e) => (e.type & 1) === 0).reduce((n, e) => n + e.length, 0)).toBe((3 * MiB) / 2);
    expect(await tool('nbdinfo', [uri('vm1@s2')])).toMatch(/qemu:allocation-depth[\s\S]*is_read_only: true/);
  });

  it.skipIf(!hasTool('nbdsh'))('a write, a trim and a write-zeroes on a snapshot get EPERM, and the connection reads on', async () => {
    const out = await nbdsh(uri('vm1@s2'), READ_ONLY_PROBE);
    expect(out.trim().split('\n')).toEqual(['write EPERM', 'trim EPERM', 'zero EPERM', 'read 4096 0']);
  });

  it.skipIf(!hasTool('nbd-tester-client'))("the NBD project's test client passes its read-only test against a snapshot export", async () => {
    const env = { ...process.env, NBD_TEST_SILENT: '1' };
    await run('nbd-tester-client', ['-N', 'vm1@s1', '-w', '-F', '127.0.0.1', String(port)], { env, timeout: 60_000 });
    await run('nbd-tester-client', ['-N', 'vm1@s1', '127.0.0.1', String(port)], { env, timeout: 60_000 });
  });
});

describe('snapshot exports while the pool is served (in-process)', () => {
  let pool: Pool;
  let server: NbdServer;
  let source: PoolExportSource;
  let local = 0;
  const names = async (): Promise<string[]> => (await NbdClient.list({ port: local })).map((e) => e.name);

  beforeAll(async () => {
    ({ pool } = await memoryPool({ deviceSize: 64 * MiB }));
    await pool.createVolume('vm1', 4 * MiB);
    source = new PoolExportSource([{ name: 'p0', pool }], { readOnly: false, allowIncomplete: false, describe: () => '' });
    server = new NbdServer({ source });
    const bound = await server.listen({ host: '127.0.0.1', port: 0 });
    local = 'port' in bound ? bound.port : 0;
  });

  afterAll(async () => {
    await server.close();
    await pool.close();
  });

  it('a snapshot taken while a client writes appears at once and reads as that point; deleted, it goes', async () => {
    const writer = await NbdClient.connect({ port: local, export: 'vm1' });
    await writer.write(Buffer.alloc(MiB, 1), 0);
    expect(await names()).toEqual(['vm1']);
    await createSnapshots(pool, [{ volume: 'vm1', snapshot: 'a' }]);
    await writer.write(Buffer.alloc(MiB, 2), 0);
    expect(await names()).toEqual(['vm1', 'vm1@a']);
    const reader = await NbdClient.connect({ port: local, export: 'vm1@a' });
    expect((await reader.read(0, MiB)).every((b) => b === 1)).toBe(true);
    expect(reader.size).toBe(4 * MiB);

    // While it is read: the pool refuses to delete an open snapshot, and so does the busy check, naming the export.
    await expect(deleteSnapshot(pool, { volume: 'vm1', snapshot: 'a' })).rejects.toThrow(/open/);
    const ctx = { poolName: 'p0', clientsOf: (key: string) => server.clientsOf(source.exportName('p0', key)), disconnect: (key: string) => server.disconnect(source.exportName('p0', key)) };
    await expect(releaseFrozenExport(ctx, 'vm1@a', 'snapshot', false)).rejects.toBeInstanceOf(AdminError);
    expect(await releaseFrozenExport(ctx, 'vm1@a', 'snapshot', true)).toBe(1);
    await deleteSnapshot(pool, { volume: 'vm1', snapshot: 'a' });
    expect(await names()).toEqual(['vm1']);
    const peer = await RawPeer.connect(local);
    await greet(peer);
    peer.send(option(K.OPT_GO, goData('vm1@a')));
    expect((await optReply(peer)).type).toBe(K.REP_ERR_UNKNOWN);
    peer.destroy();
    reader.destroy();
    // The volume kept every write, and its writer was never disturbed.
    expect((await writer.read(0, MiB)).every((b) => b === 2)).toBe(true);
    await writer.disconnect();
  });

  it('a volume turned into a template is exported read-only under its name from then on', async () => {
    await pool.createVolume('base', MiB);
    const w = await NbdClient.connect({ port: local, export: 'base' });
    await w.write(Buffer.alloc(4096, 7), 0);
    await w.disconnect();
    for (let i = 0; i < 100 && server.openExports > 0; i++) await new Promise((r) => setTimeout(r, 10));
    await convertToTemplate(pool, 'base');
    const r = await NbdClient.connect({ port: local, export: 'base' });
    expect((await r.read(0, 4096)).every((b) => b === 7)).toBe(true);
    await expect(r.write(Buffer.alloc(512), 0)).rejects.toThrow();
    await r.disconnect();
  });
});
