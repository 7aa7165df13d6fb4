import fs from 'node:fs';
import { BlockDeviceError, FileDevice, type BlockDevice } from '../src/blockdev/index.js';
import { Pool, type VolumeInfo } from '../src/qcowlike/index.js';
import { Registry, type PoolRecord } from './registry.js';

export interface OpenedPool {
  pool: Pool;
  record: PoolRecord;
  /** Checkpoints and closes the pool and the device under it. */
  close: () => Promise<void>;
}

/**
 * The one place a registered pool is brought up from its record: every
 * command goes through here, so when RAID arrays arrive only this function
 * (and openBacking) learns to assemble them.
 */
export async function openRegisteredPool(home: string, name: string, opts: { readOnly: boolean }): Promise<OpenedPool> {
  const registry = new Registry(home);
  const record = registry.get(name);
  const dev = openBacking(registry, record, opts.readOnly);
  let pool: Pool;
  try {
    pool = await Pool.open(dev, { readOnly: opts.readOnly });
  } catch (err) {
    await dev.close();
    throw new Error(`pool '${name}': ${oneLine(err)}`);
  }
  return { pool, record, close: () => pool.close() };
}

/** Runs `fn` on an open pool and always closes it, so the journal is checkpointed and the lock released. */
export async function withPool<T>(home: string, name: string, opts: { readOnly: boolean }, fn: (opened: OpenedPool) => Promise<T>): Promise<T> {
  const opened = await openRegisteredPool(home, name, opts);
  let result: T;
  try {
    result = await fn(opened);
  } catch (err) {
    await opened.close().catch(() => undefined);
    throw err;
  }
  await opened.close();
  return result;
}

function openBacking(registry: Registry, record: PoolRecord, readOnly: boolean): BlockDevice {
  if (record.backing.kind === 'raid') throw raidNotAvailable();
  const path = registry.filePath(record);
  if (!fs.existsSync(path)) throw new Error(`pool '${record.name}': its file ${path} is missing`);
  try {
    return FileDevice.open(path, { readOnly });
  } catch (err) {
    if (err instanceof BlockDeviceError && err.code === 'EBUSY') {
      throw new PoolInUseError(`pool '${record.name}' is in use by another process (${path} is locked)`);
    }
    throw new Error(`pool '${record.name}': ${oneLine(err)}`);
  }
}

/** The pool's device is locked by another process (a server, another command): nothing may touch it. */
export class PoolInUseError extends Error {}

export function raidNotAvailable(): Error {
  return new Error('RAID-backed pools are not available yet in this build (use a file-backed pool)');
}

export function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ');
}

/** The volume's record, or an error naming both the volume and the pool. */
export function findVolume(pool: Pool, poolName: string, volume: string): VolumeInfo {
  const info = pool.listVolumes().find((v) => v.name === volume);
  if (!info) throw new Error(`volume '${volume}' not found in pool '${poolName}'`);
  return info;
}
