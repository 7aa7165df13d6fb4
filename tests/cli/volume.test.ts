import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { allocated, buildCli, strata } from './strata.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('cli-volume');
afterAll(() => scratch.cleanup());
beforeAll(() => buildCli());
let n = 0;
async function poolHome(size = '4G'): Promise<string> {
  const home = path.join(scratch.dir, `home${n++}`);
  await inProcess(home, ['pool', 'create', 'p0', '--size', size]);
  return home;
}

interface VolumeJson {
  pool: string;
  name: string;
  size: number;
  allocatedBytes: number;
  readOnly: boolean;
  created: string;
  layers: { id: number; frozen: boolean }[];
}

/** Writes a raw image of `size` bytes with `data` nonzero bytes at `at`, and imports it. */
async function writeInto(home: string, ref: string, at: number, data: number, size: number): Promise<void> {
  const image = path.join(home, `img${n++}.raw`);
  const fd = fs.openSync(image, 'w');
  fs.ftruncateSync(fd, size);
  fs.writeSync(fd, Buffer.alloc(data, 0xab), 0, data, at);
  fs.closeSync(fd);
  await inProcess(home, ['import', ref, image]);
}

describe('strata volume', () => {
  it('creates a thin volume, human and JSON', async () => {
    // Large enough for its volumes: a create that overcommits the pool warns on stderr.
    const home = await poolHome('32G');
    expect(await inProcess(home, ['volume', 'create', 'p0/vm1', '20G'])).toBe('created volume p0/vm1: 20G\n');
    const v = await inProcessJson<VolumeJson>(home, ['volume', 'create', 'p0/vm2', '1.5G']);
    expect(v).toMatchObject({ pool: 'p0', name: 'vm2', size: 1.5 * 1024 ** 3, allocatedBytes: 0, readOnly: false });
    expect(v.layers).toHaveLength(1);
    // The 64M journal and little else: volumes allocate nothing until written.
    expect(allocated(path.join(home, 'p0.pool'))).toBeLessThan(72 << 20);
  });

  it('lists volumes aligned and as JSON', async () => {
    const home = await poolHome('2T');
    await inProcess(home, ['volume', 'create', 'p0/b-long-volume-name', '1T']);
    await inProcess(home, ['volume', 'create', 'p0/a', '512K']);
    const lines = (await inProcess(home, ['volume', 'list', 'p0'])).trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+SIZE\s+ALLOCATED\s+LAYERS\s+MODE\s+STATE\s+CREATED$/);
    expect(lines[1]).toMatch(/^a\s+512K\s+0\s+1\s+rw\s+ready\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    expect(lines[2]).toMatch(/^b-long-volume-name\s+1T\s+0\s+1\s+rw\s+ready\s+/);
    expect(lines[1]!.indexOf('rw')).toBe(lines[2]!.indexOf('rw'));
    expect((await inProcessJson<VolumeJson[]>(home, ['volume', 'list', 'p0'])).map((v) => [v.name, v.size])).toEqual([
      ['a', 512 * 1024],
      ['b-long-volume-name', 1024 ** 4],
    ]);
    const empty = await poolHome();
    expect(await inProcess(empty, ['volume', 'list', 'p0'])).toBe("no volumes in pool 'p0'\n");
    expect(await inProcessJson(empty, ['volume', 'list', 'p0'])).toEqual([]);
  });

  it('shows one volume, with what it holds', async () => {
    const home = await poolHome();
    await inProcess(home, ['volume', 'create', 'p0/v', '64M']);
    await writeInto(home, 'p0/v', 1 << 20, 1 << 20, 64 << 20);
    const out = await inProcess(home, ['volume', 'info', 'p0/v']);
    expect(out).toMatch(/^volume:\s+p0\/v$/m);
    expect(out).toMatch(/^size:\s+64M \(67108864 bytes\)$/m);
    expect(out).toMatch(/^allocated:\s+1M \(1048576 bytes\), 1\.6% of size$/m);
    expect(out).toMatch(/^mode:\s+read-write$/m);
    expect(out).toMatch(/^layers:\s+layer \d+ \(1M\)$/m);
    expect(await inProcessJson<VolumeJson>(home, ['volume', 'info', 'p0/v'])).toMatchObject({ pool: 'p0', name: 'v', size: 64 << 20, allocatedBytes: 1 << 20 });
  });

  it('grows a volume to a size or by +SIZE', async () => {
    const home = await poolHome();
    await inProcess(home, ['volume', 'create', 'p0/v', '1G']);
    expect(await inProcess(home, ['volume', 'resize', 'p0/v', '2G'])).toBe('resized p0/v: 1G -> 2G\n');
    expect(await inProcessJson(home, ['volume', 'resize', 'p0/v', '+512M'])).toEqual({ pool: 'p0', volume: 'v', oldSize: 2 * 1024 ** 3, size: 2.5 * 1024 ** 3, warnings: [] });
    expect((await inProcessJson<VolumeJson>(home, ['volume', 'info', 'p0/v'])).size).toBe(2.5 * 1024 ** 3);
  });

  it('shrinks over unallocated space, refuses to cut off data unless --force', async () => {
    const home = await poolHome();
    await inProcess(home, ['volume', 'create', 'p0/v', '64M']);
    await writeInto(home, 'p0/v', 40 << 20, 1 << 20, 64 << 20);
    await inProcess(home, ['volume', 'resize', 'p0/v', '48M']);
    expect(await inProcessFails(home, ['volume', 'resize', 'p0/v', '32M'])).toBe('cannot shrink p0/v from 48M to 32M: 1M of data lies beyond 32M (a forced shrink discards it)');
    expect((await inProcessJson<VolumeJson>(home, ['volume', 'info', 'p0/v'])).size).toBe(48 << 20);
    await inProcess(home, ['volume', 'resize', 'p0/v', '32M', '--force']);
    const v = await inProcessJson<VolumeJson>(home, ['volume', 'info', 'p0/v']);
    expect(v.size).toBe(32 << 20);
    expect(v.allocatedBytes).toBe(0);
    // Growing back shows zeroes where the cut-off data was.
    await inProcess(home, ['volume', 'resize', 'p0/v', '64M']);
    const out = path.join(home, 'back.raw');
    await inProcess(home, ['export', 'p0/v', out]);
    expect(fs.readFileSync(out).every((b) => b === 0)).toBe(true);
  });

  it('deletes a volume and gives its space back', async () => {
    const home = await poolHome();
    await inProcess(home, ['volume', 'create', 'p0/v', '64M']);
    await writeInto(home, 'p0/v', 0, 32 << 20, 64 << 20);
    const before = allocated(path.join(home, 'p0.pool'));
    expect(before).toBeGreaterThanOrEqual(32 << 20);
    expect(await inProcess(home, ['volume', 'delete', 'p0/v'])).toBe('deleted volume p0/v\n');
    expect(await inProcessJson(home, ['volume', 'list', 'p0'])).toEqual([]);
    expect(allocated(path.join(home, 'p0.pool'))).toBeLessThan(before - (24 << 20));
    await inProcess(home, ['volume', 'create', 'p0/v', '64M']);
    expect((await inProcessJson<VolumeJson>(home, ['volume', 'info', 'p0/v'])).allocatedBytes).toBe(0);
    expect(await inProcessJson(home, ['volume', 'delete', 'p0/v'])).toEqual({ deleted: 'p0/v' });
  });

  it('preallocates when asked', async () => {
    const home = await poolHome();
    await inProcess(home, ['volume', 'create', 'p0/full', '32M', '--preallocation', 'full']);
    expect(allocated(path.join(home, 'p0.pool'))).toBeGreaterThanOrEqual(32 << 20);
    expect(strata(home, ['volume', 'create', 'p0/x', '1M', '--preallocation', 'lots']).code).toBe(2);
  });

  it('names what is wrong in one line: unknown pool or volume, duplicate, bad names and sizes', async () => {
    const home = await poolHome();
    await inProcess(home, ['volume', 'create', 'p0/v', '1G']);
    expect(await inProcessFails(home, ['volume', 'create', 'p0/v', '1G'])).toBe("volume 'p0/v' already exists");
    expect(await inProcessFails(home, ['volume', 'info', 'p0/nope'])).toBe("volume 'nope' not found in pool 'p0'");
    expect(await inProcessFails(home, ['volume', 'resize', 'p0/nope', '2G'])).toBe("volume 'nope' not found in pool 'p0'");
    expect(await inProcessFails(home, ['volume', 'delete', 'p0/nope'])).toBe("volume 'nope' not found in pool 'p0'");
    expect(await inProcessFails(home, ['volume', 'list', 'p9'])).toBe(`pool 'p9' not found in ${home}`);
    expect(await inProcessFails(home, ['volume', 'info', 'p9/v'])).toBe(`pool 'p9' not found in ${home}`);
    expect(await inProcessFails(home, ['volume', 'create', 'p0/x', '12Q'])).toMatch(/^invalid size '12Q'/);
    expect(await inProcessFails(home, ['volume', 'create', 'p0/x', '0'])).toBe('a volume needs a size above 0');
    expect(await inProcessFails(home, ['volume', 'resize', 'p0/v', 'big'])).toMatch(/^invalid size 'big'/);
    expect(await inProcessFails(home, ['volume', 'create', 'p0', '1G'])).toMatch(/^invalid volume 'p0' \(expected POOL\/VOL/);
    expect(await inProcessFails(home, ['volume', 'create', 'p0/a/b', '1G'])).toMatch(/expected POOL\/VOL/);
    expect(await inProcessFails(home, ['volume', 'create', 'p0/.x', '1G'])).toMatch(/^invalid volume name '\.x'/);
    expect(strata(home, ['volume', 'create', 'p0/x']).code).toBe(2);
  });
});
