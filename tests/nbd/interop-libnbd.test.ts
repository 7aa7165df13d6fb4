import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { SparseMemoryDevice } from '../../src/nbd/index.js';
import { scratchDir } from '../support/scratch.js';
import { expectBytesEqual, hasTool, serveDevices, tool } from './support.js';

const MiB = 1024 * 1024;
const scratch = scratchDir('nbd-libnbd');
const haveLibnbd = hasTool('nbdinfo') && hasTool('nbdcopy');

describe.skipIf(!haveLibnbd)('nbdinfo and nbdcopy against the server', () => {
  let s: Awaited<ReturnType<typeof serveDevices>>;
  const thin = new SparseMemoryDevice(64 * MiB);
  const target = new SparseMemoryDevice(64 * MiB);

  beforeAll(async () => {
    s = await serveDevices([
      { name: 'vm1', device: thin, description: 'first volume' },
      { name: 'vm1@snap', device: new MemoryDevice({ size: 8 * MiB }), readOnly: true },
      { name: 'copy', device: target },
    ]);
  });

  afterAll(async () => {
    await s.close();
    scratch.cleanup();
  });

  it('nbdinfo --list shows every export with its description', async () => {
    const out = await tool('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${s.port}`]);
    const exps = (JSON.parse(out) as { exports: { 'export-name': string; description?: string; is_read_only: boolean }[] }).exports;
    expect(exps.map((e) => e['export-name'])).toEqual(['vm1', 'vm1@snap', 'copy']);
    expect(exps[0]!.description).toBe('first volume');
    expect(exps[1]!.is_read_only).toBe(true);
  });

  it('nbdinfo --map shows holes and data, and --content reads the disk', async () => {
    // An ext2 superblock magic makes `file` say something other than "data".
    const boot = Buffer.alloc(2048);
    boot.writeUInt16LE(0xef53, 1024 + 56);
    await thin.write(boot, 0);
    await thin.write(crypto.randomBytes(2 * MiB), 8 * MiB);
    const map = JSON.parse(await tool('nbdinfo', ['--map', '--json', s.uri('vm1')])) as { offset: number; length: number; type: number }[];
    expect(map.filter((e) => e.type === 0).map((e) => [e.offset, e.length])).toEqual([
      [0, 64 * 1024],
      [8 * MiB, 2 * MiB],
    ]);
    expect(map.filter((e) => e.type === 3).reduce((n, e) => n + e.length, 0)).toBe(64 * MiB - 2 * MiB - 64 * 1024);
    const content = await tool('nbdinfo', ['--content', s.uri('vm1')]);
    expect(content).toMatch(/ext2/);
  });

  it('nbdcopy copies a file into an export and back out (several connections), keeping holes', async () => {
    const src = path.join(scratch.dir, 'src.raw');
    const fd = fs.openSync(src, 'w');
    fs.ftruncateSync(fd, 64 * MiB);
    for (let i = 0; i < 64; i += 4) fs.writeSync(fd, crypto.randomBytes(MiB), 0, MiB, i * MiB);
    fs.closeSync(fd);
    await tool('nbdcopy', ['--connections=4', src, s.uri('copy')]);
    const status = await target.blockStatus(0, 64 * MiB);
    expect(status.filter((e) => !e.hole).reduce((n, e) => n + e.length, 0)).toBe(16 * MiB);
    const out = path.join(scratch.dir, 'out.raw');
    await tool('nbdcopy', [s.uri('copy'), out]);
    expectBytesEqual(fs.readFileSync(out), fs.readFileSync(src), 'copied back out');
  });
});
