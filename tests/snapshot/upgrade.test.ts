import fs from 'node:fs';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { INCOMPAT_SHARED } from '../../src/qcowlike/header.js';
import { Pool } from '../../src/qcowlike/index.js';
import { cloneVolume, createSnapshots, deleteSnapshot, openFrozen } from '../../src/snapshot/index.js';
import { reopenable } from '../support/pool.js';

/**
 * A pool file made by the build before shared maps (4 KiB clusters; 'vm1'
 * 1 MiB with 64 blocks of 4 KiB, block i at 12 KiB × i filled with
 * (7i + 1) mod 256; 'vm2' 512 KiB with 8 KiB of 0xab at 100 KiB).
 */
const FIXTURE = new URL('../fixtures/pool-v1-unshared.img.gz', import.meta.url);

async function oldPool(): Promise<MemoryDevice> {
  const bytes = zlib.gunzipSync(fs.readFileSync(FIXTURE));
  const dev = new MemoryDevice({ size: bytes.length });
  await dev.write(bytes, 0);
  return dev;
}

function expected(name: 'vm1' | 'vm2'): Buffer {
  if (name === 'vm2') {
    const b = Buffer.alloc(512 << 10);
    b.fill(0xab, 100 * 1024, 108 * 1024);
    return b;
  }
  const b = Buffer.alloc(1 << 20);
  for (let i = 0; i < 64; i++) b.fill((i * 7 + 1) & 255, i * 12288, i * 12288 + 4096);
  return b;
}

async function readAll(h: { read(b: Uint8Array, o: number): Promise<void>; size: number; close(): Promise<void> }): Promise<Buffer> {
  const b = Buffer.alloc(h.size);
  await h.read(b, 0);
  await h.close();
  return b;
}

async function headerIncompat(dev: MemoryDevice): Promise<bigint> {
  const h = Buffer.alloc(512);
  await dev.read(h, 0);
  return h.readBigUInt64LE(16);
}

describe('a pool from the build before snapshots', () => {
  it('opens as it is, and stays readable by that build until the first snapshot or clone shares a map', async () => {
    const dev = await oldPool();
    const before = await headerIncompat(dev);
    expect(before & INCOMPAT_SHARED).toBe(0n);
    const pool = await Pool.open(reopenable(dev));
    for (const name of ['vm1', 'vm2'] as const) expect((await readAll(await pool.openVolume(name))).equals(expected(name)), name).toBe(true);
    const w = await pool.openVolume('vm2');
    await w.write(Buffer.alloc(4096, 1), 0);
    await w.close();
    await pool.close();
    expect(await headerIncompat(dev), 'no feature bit added by ordinary use').toBe(before);
  });

  it('takes snapshots and clones after setting the shared-maps feature bit, and reads its old data through them', async () => {
    const dev = await oldPool();
    const pool = await Pool.open(reopenable(dev));
    await createSnapshots(pool, [{ volume: 'vm1', snapshot: 'old' }]);
    expect((await headerIncompat(dev)) & INCOMPAT_SHARED, 'bit 3 set before sharing').toBe(INCOMPAT_SHARED);
    const v = await pool.openVolume('vm1');
    await v.write(Buffer.alloc(8192, 0xee), 0);
    await v.close();
    await cloneVolume(pool, { volume: 'vm1', snapshot: 'old' }, 'vm3');
    expect((await readAll(await openFrozen(pool, { volume: 'vm1', snapshot: 'old' }))).equals(expected('vm1'))).toBe(true);
    expect((await readAll(await pool.openVolume('vm3'))).equals(expected('vm1'))).toBe(true);
    const now = expected('vm1');
    now.fill(0xee, 0, 8192);
    expect((await readAll(await pool.openVolume('vm1'))).equals(now)).toBe(true);
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
    const again = await Pool.open(reopenable(dev));
    await expect(deleteSnapshot(again, { volume: 'vm1', snapshot: 'old' })).rejects.toThrow(/dependent clones: vm3/);
    expect((await again.check()).problems).toEqual([]);
    await again.close();
  });
});
