import type { Pool } from '../qcowlike/index.js';
import { RaidArray } from '../raid/index.js';
import { RadosDevice } from '../blockdev/rados/rados-device.js';
import { formatSize } from './size.js';

/**
 * How a pool's device stands: a file pool is always optimal; a RAID pool is
 * what its array says; a pool on RADOS is fenced once another host took it
 * over while it was open here (every write to it fails from then on).
 */
export type PoolState = 'optimal' | 'degraded' | 'rebuilding' | 'failed' | 'fenced';

/** Health and space at a glance, as `pool list` and `pool info` show them. */
export interface PoolHealth {
  state: PoolState;
  /** Bytes all volumes could grow to (the sum of their virtual sizes): what the pool has promised. */
  provisionedBytes: number;
  /** Bytes the pool can hold for data and metadata. */
  capacityBytes: number;
  allocatedBytes: number;
  freeBytes: number;
  /** provisionedBytes above capacityBytes: writes may one day find the pool full (thin overcommit). */
  overcommitted: boolean;
}

export function poolHealth(pool: Pool): PoolHealth {
  const s = pool.stats();
  const provisionedBytes = pool.volumeRecords().reduce((sum, v) => sum + v.size, 0);
  const capacityBytes = s.totalClusters * s.clusterSize;
  return {
    state: deviceState(pool),
    provisionedBytes,
    capacityBytes,
    allocatedBytes: s.usedClusters * s.clusterSize,
    freeBytes: s.freeClusters * s.clusterSize,
    overcommitted: provisionedBytes > capacityBytes,
  };
}

function deviceState(pool: Pool): PoolState {
  if (pool.dev instanceof RaidArray) return pool.dev.status().state;
  if (pool.dev instanceof RadosDevice && pool.dev.isFenced) return 'fenced';
  return 'optimal';
}

/**
 * The warning a volume create or resize gets when it leaves the pool promising
 * more than it holds, as LVM-thin warns: allowed (that is thin provisioning),
 * but the admin should know before the pool fills under a guest.
 */
export function overcommitWarnings(pool: Pool, poolName: string): string[] {
  const h = poolHealth(pool);
  if (!h.overcommitted) return [];
  return [`pool '${poolName}' is overcommitted: its volumes total ${formatSize(h.provisionedBytes)} over ${formatSize(h.capacityBytes)} of space (${formatSize(h.freeBytes)} free); writes fail once it fills (grow it with pool resize)`];
}
