import type { BlockDevice, Extent } from '../blockdev/index.js';

export type Preallocation = 'off' | 'metadata' | 'full';

export interface PoolOpenOptions {
  /** Byte budget for cached metadata blocks (clean and dirty). Default 64 MiB. */
  cacheBytes?: number;
  readOnly?: boolean;
  /**
   * Most L2 tables open for in-place overwrites at once: after a crash, the
   * allocated data they map is re-read. Default: 4 GiB of virtual space, at
   * least 16 tables.
   */
  maxIntents?: number;
}

export interface PoolCreateOptions {
  /** Power of two from 4 KiB to 2 MiB; default 64 KiB. */
  clusterSize?: number;
  /** Size of the metadata journal region; default scales with the device, 1–64 MiB. */
  journalBytes?: number;
  /**
   * Size of the double-write area, which bounds how many metadata blocks one
   * pass of a checkpoint writes home; default scales with the device, 1–32 MiB.
   */
  doubleWriteBytes?: number;
  cacheBytes?: number;
  /**
   * Most L2 tables open for in-place overwrites at once: after a crash, the
   * allocated data they map is re-read. Default: 4 GiB of virtual space, at
   * least 16 tables.
   */
  maxIntents?: number;
}

export interface PoolStats {
  uuid: string;
  clusterSize: number;
  subclusterSize: number;
  /** Size of the device under the pool. */
  deviceSize: number;
  /** Clusters usable for data and metadata (after header, journal, bitmap). */
  totalClusters: number;
  usedClusters: number;
  freeClusters: number;
  volumes: number;
  layers: number;
  journalBytes: number;
  /** Why freeing the space of deleted volumes failed at open (retried at the next open). */
  reclaimError?: string;
}

export interface LayerInfo {
  id: number;
  parent: number | null;
  frozen: boolean;
  /** Bytes of data this layer holds itself (allocated sub-clusters). */
  allocatedBytes: number;
}

export interface VolumeInfo {
  name: string;
  size: number;
  /** Bytes of data held by the volume's own top layer. */
  allocatedBytes: number;
  created: string;
  readOnly: boolean;
  /** The copy that filled the volume (an import) has not finished: its contents are partial. */
  incomplete: boolean;
  /** Top layer first. */
  layers: LayerInfo[];
}

export interface CheckProblem {
  kind: 'checksum' | 'leak' | 'overlap' | 'dangling' | 'header' | 'journal' | 'catalog' | 'bitmap' | 'root' | 'quarantine';
  /** Byte offset on the pool device where the problem is, when there is one place. */
  hostOffset?: number;
  volume?: string;
  layer?: number;
  virtualOffset?: number;
  message: string;
  repaired: boolean;
  /** Quarantine: the clusters held. */
  clusters?: number[];
  /** A bad copy with a good one beside it in the redundancy below, not rewritten (read-only, or check without repair). */
  pending?: boolean;
}

export interface CheckReport {
  problems: CheckProblem[];
  clustersChecked: number;
  leakedClusters: number;
  /** Clusters in use that nothing readable claims but a damaged table may: kept, never freed by repair. */
  quarantinedClusters: number;
  corruptBlocks: number;
  repaired: number;
  /** Problems that are pending repairs (see CheckProblem.pending). */
  pendingRepairs: number;
}

/** A volume as the NBD layer and the CLI use it: a BlockDevice whose blockStatus reports holes and zeroes. */
export interface Volume extends BlockDevice {
  readonly volumeName: string;
  blockStatus(offset: number, length: number): Promise<Extent[]>;
  /** Which layer each range comes from (qemu:allocation-depth): 0 none, 1 the top, 2 its parent … */
  allocationDepth?(offset: number, length: number): Promise<Array<{ offset: number; length: number; depth: number }>>;
}
