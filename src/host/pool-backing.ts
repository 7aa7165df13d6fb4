import type { BlockDevice } from '../blockdev/index.js';
import { fileBacking } from './file-backing.js';
import type { OpenedArray, OpenPoolOptions } from './open-pool.js';
import { radosBacking } from './rados-backing.js';
import { raidBacking } from './raid-backing.js';
import type { PoolBacking, PoolRecord, Registry } from './registry.js';

/**
 * What a pool lives on, as an open set: a file, a RAID array or a device on
 * Ceph RADOS. Each kind knows how to open itself under a pool,
 * describe itself and name what it consists of; adding a kind adds an entry
 * to BACKINGS (and its record shape to PoolBacking), not a branch in every
 * command.
 */
export interface BackingType {
  /** The record's backing with every path absolute (stored, they may be relative to the home). */
  absolute(registry: Registry, record: PoolRecord): PoolBacking;
  /** One line for `pool list` and `pool info`. */
  describe(backing: PoolBacking): string;
  /** The device under the pool, and the array when it is one. `say` takes what assembling it found worth telling. */
  open(registry: Registry, record: PoolRecord, opts: OpenPoolOptions, say: (message: string) => void): Promise<OpenedBacking>;
  /** The files the backing consists of (a deleted pool removes them). */
  files(registry: Registry, record: PoolRecord): string[];
}

export interface OpenedBacking {
  dev: BlockDevice;
  raid?: OpenedArray;
  /** Called once the pool on the device has closed. */
  afterClose?: () => void | Promise<void>;
}

const BACKINGS: Record<PoolBacking['kind'], BackingType> = { file: fileBacking, raid: raidBacking, rados: radosBacking };

export function backingType(backing: PoolBacking): BackingType {
  return BACKINGS[backing.kind];
}
