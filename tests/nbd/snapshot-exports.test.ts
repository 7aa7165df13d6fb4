import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withPool } from '../../src/host/open-pool.js';
import { NbdClient } from '../../src/nbd/index.js';
import type { Pool } from '../../src/qcowlike/index.js';
import { cloneVolume, createSnapshots, templateFrom } from '../../src/snapshot/index.js';
import { memoryPool } from '../support/pool.js';
import { scratchDir } from '../support/scratch.js';
import { hasTool, nbdsh, READ_ONLY_PROBE, startServe, STRATA, tool, type ServeProcess } from './support.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const SIZE = 16 * MiB;

/**
 * Whether this build has the chain operations (they were signatures that
 * throw "not built yet" before): the tests below need real snapshots.
 */
async function chainsBuilt(): Promise<boolean> {
  const { pool } = await memoryPool();
  try {
    await pool.createVolume('probe', MiB);
    await createSnapshots(pool, [{ volume: 'probe', snapshot: 'p' }]);
    return true;
  } catch (err) {
    if (err instanceof Error && err.message.endsWith('not built yet')) return false;
    throw err;
  } finally {
    await pool.close();
  }
}

const built = await chainsBuilt();
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

describe.skipIf(!built)('snapshot, clone and template exports of a served pool (real chains)', () => {
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

  it.skipIf(!hasTool('nbdinfo'))('nbdinfo --map=qemu:allocation-depth names the layer each range of a snapshot comes from; --map gives base:allocation', async () => {
    expect(await depthMap('vm1@s1')).toEqual([
      [0, MiB, 1],
      [MiB, SIZE - MiB, 0],
    ]);
    expect(await depthMap('vm1@s2')).toEqual([
      [0, MiB / 2, 2],
      [MiB / 2, MiB, 1],
      [(3 * MiB) / 2, SIZE - (3 * MiB) / 2, 0],
    ]);
    // However the template's layers are laid out, its allocated ranges are its data and nothing else.
    const gold = await depthMap('gold');
    expect(gold.filter(([, , d]) => d > 0).reduce((n, [, len]) => n + len, 0)).toBe(2.5 * MiB);
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
