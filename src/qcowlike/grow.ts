import type { BlockDevice } from '../blockdev/index.js';
import type { Allocator } from './allocator.js';
import { PoolError } from './errors.js';
import { headerOffsets, lastSector, writeHeader } from './header-copies.js';
import { BlockType } from './metablock.js';
import { COPY_CLUSTERS, INCOMPAT_COPIES, type PoolHeader } from './header.js';
import type { MetaStore } from './metastore.js';

export interface GrowResult {
  oldDeviceSize: number;
  deviceSize: number;
  oldTotalClusters: number;
  totalClusters: number;
}

/**
 * Takes a device that has grown (a file extended under the pool) into the
 * pool: the clusters up to the new end become free space, and the copies
 * region (root copy, journal header copy) and the last-sector header copy
 * move to the new end. The order makes a crash at any point leave the old
 * size or the new one, never a pool that does not open:
 *
 * 1. the bitmap bits of the new clusters are cleared, through the journal
 *    and a checkpoint (past the old end they mean nothing);
 * 2. with writes and commits held, the copies region is copied to its new
 *    place and flushed (past the old end: unused by the old layout);
 * 3. the new header goes to the new last sector and the second sector,
 *    flushed, then to sector 0, flushed: sector 0 is the commit point, since
 *    a reader takes the first copy that verifies in that order, and a torn
 *    sector 0 falls back to the second sector, already new;
 * 4. only then the pool in memory takes the new size.
 *
 * The bitmap is not moved: a pool grows up to what its bitmap covers
 * (Allocator.capacity; 32 GiB per bitmap block with 64 KiB clusters).
 */
export async function growPool(dev: BlockDevice, header: PoolHeader, store: MetaStore, alloc: Allocator): Promise<GrowResult> {
  const C = header.clusterSize;
  const oldTotal = header.totalClusters;
  const oldDeviceSize = header.deviceSize;
  if (!(header.incompat & INCOMPAT_COPIES) || header.copiesStart !== oldTotal) {
    throw new PoolError('EINVAL', `${dev.name}: this pool keeps no copies region at its end (made by an earlier build); a repairing check adds one, then grow`);
  }
  const newTotal = Math.floor(dev.size / C) - COPY_CLUSTERS;
  if (newTotal <= oldTotal) throw new PoolError('EINVAL', `${dev.name}: the device (${dev.size} bytes) is not larger than the pool (${(oldTotal + COPY_CLUSTERS) * C} bytes)`);
  if (newTotal > alloc.capacity) {
    throw new PoolError('ENOSPC', `${dev.name}: the pool's allocation bitmap covers ${alloc.capacity * C} bytes; growing past that needs a bigger bitmap, which this build cannot add`);
  }

  // 1.
  const gate = store.enter();
  if (gate) await gate;
  try {
    alloc.clearPastEnd(oldTotal, newTotal);
  } finally {
    store.exit();
  }
  await store.commit();
  await store.checkpoint();

  // 2–4, with no commit or checkpoint in between to rewrite the journal header copy behind the raw copy.
  await store.exclusive(async () => {
    const region = Buffer.alloc(COPY_CLUSTERS * C);
    await dev.read(region, oldTotal * C);
    await dev.write(region, newTotal * C);
    await dev.flush();
    const next: PoolHeader = { ...header, totalClusters: newTotal, copiesStart: newTotal, deviceSize: dev.size };
    const offsets = headerOffsets(next, dev.size);
    if (!offsets.includes(lastSector(dev.size))) throw new Error('internal: the grown header keeps no copy in the last sector');
    await writeHeader(dev, next, offsets.filter((o) => o !== 0));
    await dev.flush();
    await writeHeader(dev, next, [0]);
    await dev.flush();
    header.totalClusters = newTotal;
    header.copiesStart = newTotal;
    header.deviceSize = dev.size;
    store.journal.copyAt = (newTotal + 1) * C;
    // The root copy is served from its new place; the old region is data space now and must not be written back.
    await store.load(newTotal, BlockType.Root, 1, true);
    for (let c = oldTotal; c < oldTotal + COPY_CLUSTERS; c++) store.forget(c);
  });
  return { oldDeviceSize, deviceSize: dev.size, oldTotalClusters: oldTotal, totalClusters: newTotal };
}
