import { expect } from 'vitest';
import { MemoryDevice, PassThroughDevice, type BlockDevice, type CrashSimulator } from '../../src/blockdev/index.js';
import { Pool, type PoolOpenOptions } from '../../src/qcowlike/index.js';

/** A pool on a fresh memory device, small enough for thousands of property cases. */
export async function memoryPool(opts: { deviceSize?: number; clusterSize?: number; cacheBytes?: number; journalBytes?: number } = {}): Promise<{ pool: Pool; dev: BlockDevice }> {
  const dev = new MemoryDevice({ size: opts.deviceSize ?? 32 << 20 });
  const pool = await Pool.create(dev, { clusterSize: opts.clusterSize ?? 65536, cacheBytes: opts.cacheBytes, journalBytes: opts.journalBytes });
  return { pool, dev };
}

/** Finds where a byte pattern sits on a device (to aim corruption at real data or metadata). */
export async function findOnDevice(dev: BlockDevice, needle: Buffer, step = 512): Promise<number> {
  const chunk = Buffer.alloc(4 << 20);
  for (let off = 0; off < dev.size; off += chunk.length - needle.length) {
    const n = Math.min(chunk.length, dev.size - off);
    await dev.read(chunk.subarray(0, n), off);
    let at = chunk.subarray(0, n).indexOf(needle);
    while (at >= 0 && (off + at) % step !== 0) at = chunk.subarray(0, n).indexOf(needle, at + 1);
    if (at >= 0) return off + at;
    if (off + n >= dev.size) break;
  }
  return -1;
}

/** A view of a device whose close() does nothing, so a pool on it can be closed and opened again. */
class Reopenable extends PassThroughDevice {
  override async close(): Promise<void> {}
}

export function reopenable(dev: BlockDevice): BlockDevice {
  return new Reopenable(dev);
}

/** Power loss, reopen, `check` clean; returns the first `length` bytes of volume 'v'. */
export async function volumeAfterCrash(sim: CrashSimulator, seed: number, length: number, opts: PoolOpenOptions): Promise<Buffer> {
  const { device } = await sim.crash(seed);
  const pool = await Pool.open(device, opts);
  expect((await pool.check()).problems).toEqual([]);
  const v = await pool.openVolume('v');
  const out = Buffer.alloc(length);
  await v.read(out, 0);
  await v.close();
  return out;
}
