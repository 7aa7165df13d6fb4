import type { BlockDevice, ReusableBuffers } from '../blockdev/index.js';
import type { Allocator } from './allocator.js';
import type { Geometry } from './geometry.js';
import type { MetaStore } from './metastore.js';

/** What volumes and layers need of their pool. */
export interface PoolCore {
  readonly dev: BlockDevice;
  readonly store: MetaStore;
  readonly alloc: Allocator;
  readonly geo: Geometry;
  readonly readOnly: boolean;
  /** Checksum failures repaired from redundancy below, and found unrepairable. */
  readonly counters: { repairedData: number; corruptData: number };
  /** Scratch clusters for copy-ups, shared by the pool's volumes. */
  readonly clusterBuffers: ReusableBuffers;
}
