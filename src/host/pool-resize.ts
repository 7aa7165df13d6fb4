import { RadosDevice } from '../blockdev/rados/index.js';
import { FileDevice } from '../blockdev/index.js';
import { PoolError, type Pool } from '../qcowlike/index.js';
import { RaidArray } from '../raid/index.js';
import { formatSize } from './size.js';

/** The copies region at the end of the device (qcowlike COPY_CLUSTERS): part of the device, not of the bitmap's span. */
const COPY_REGION_CLUSTERS = 2;

export interface PoolResizeResult {
  oldSize: number;
  size: number;
  /** Bytes the pool can hold for data and metadata, before and after. */
  oldCapacityBytes: number;
  capacityBytes: number;
}

/**
 * Grows a pool to `size` bytes of device (grow only, rounded down to whole
 * clusters): a file pool's file is extended, then the pool takes the new
 * space in (Pool.grow, crash-safe). The same function runs in-process and in
 * the server that holds the pool, where I/O goes on meanwhile (writes wait at
 * the gate for the header switch only).
 */
export async function resizePool(pool: Pool, poolName: string, requested: number): Promise<PoolResizeResult> {
  const dev = pool.dev;
  const C = pool.stats().clusterSize;
  const oldSize = dev.size;
  const size = Math.floor(requested / C) * C;
  if (requested < oldSize) throw new PoolError('EINVAL', `cannot shrink pool '${poolName}' from ${formatSize(oldSize)} to ${formatSize(requested)}: pools only grow`);
  if (size <= oldSize) throw new PoolError('EINVAL', `pool '${poolName}' is already ${formatSize(oldSize)}`);
  if (dev instanceof RaidArray) throw new PoolError('EINVAL', `pool '${poolName}' is on a RAID array: growing it needs every member replaced by a bigger one and the array grown, which this build cannot do yet`);
  if (!(dev instanceof FileDevice) && !(dev instanceof RadosDevice)) throw new PoolError('EINVAL', `pool '${poolName}' is on ${dev.name}, which cannot grow`);
  // Checked before the file grows, so that a refused resize leaves the file as it was.
  const limit = (pool.alloc.capacity + COPY_REGION_CLUSTERS) * C;
  if (size > limit) throw new PoolError('ENOSPC', `pool '${poolName}' can grow to at most ${formatSize(limit)} (${limit} bytes): its allocation bitmap covers no more, and this build cannot enlarge it`);
  const oldCapacityBytes = pool.stats().totalClusters * C;
  await dev.grow(size);
  // A crash from here on leaves the old pool in a longer file (or RADOS device) (it opens as before) until the header switch.
  await pool.grow();
  return { oldSize, size, oldCapacityBytes, capacityBytes: pool.stats().totalClusters * C };
}
