import { randomUUID } from 'node:crypto';
import { metaChecksum } from './checksum.js';
import { PoolError } from './errors.js';
import { TRAILER } from './metablock.js';

/**
 * The pool header: the first 512 bytes of cluster 0, written at creation and
 * (rarely) when autoclear bits are dropped, one sector so that it is never
 * torn. Everything that changes afterwards lives in journaled metadata blocks.
 * Byte layout: docs/FORMAT.md.
 */
export const MAGIC = Buffer.from('STRATAPL', 'latin1');
export const VERSION = 1;
export const HEADER_BYTES = 512;

/** Feature bits an older reader must refuse when it does not know them. */
export const INCOMPAT_JOURNAL = 1n << 0n;
export const INCOMPAT_SUBCLUSTERS = 1n << 1n;
/**
 * The pool keeps copies of the blocks everything depends on (header, root,
 * catalog, journal header; docs/FORMAT.md). Incompatible because a writer
 * that does not know them would update one copy and leave the other stale,
 * and its check would free the catalog's second copy as leaked.
 */
export const INCOMPAT_COPIES = 1n << 2n;
/**
 * Layers share L2 tables and data clusters (snapshots, clones, templates):
 * a table's owner is in its trailer and an entry may point at an ancestor's
 * cluster (bit 63 of its host word). A writer that does not know this would
 * write shared clusters in place and free them with one of their layers, so
 * it must refuse the pool. Set when the first layer is shared.
 */
export const INCOMPAT_SHARED = 1n << 3n;
export const KNOWN_INCOMPAT = INCOMPAT_JOURNAL | INCOMPAT_SUBCLUSTERS | INCOMPAT_COPIES | INCOMPAT_SHARED;
/** Bits a reader may ignore. None defined yet. */
export const KNOWN_COMPAT = 0n;
/** Bits a writer that does not know them must clear. None defined yet. */
export const KNOWN_AUTOCLEAR = 0n;

export const MIN_CLUSTER = 4096;
export const MAX_CLUSTER = 2 * 1024 * 1024;
/** The root metadata block sits at a fixed cluster. */
export const ROOT_CLUSTER = 1;
/** The copies region: the root block's copy, then a cluster holding the journal header's copy. */
export const COPY_CLUSTERS = 2;

export interface PoolHeader {
  version: number;
  incompat: bigint;
  compat: bigint;
  autoclear: bigint;
  clusterSize: number;
  subclusters: number;
  uuid: string;
  deviceSize: number;
  journalStart: number;
  journalClusters: number;
  dwStart: number;
  dwClusters: number;
  bitmapStart: number;
  bitmapBlocks: number;
  dataStart: number;
  totalClusters: number;
  created: number;
  /** First cluster of the copies region (with INCOMPAT_COPIES), else 0. */
  copiesStart: number;
}

/**
 * Sub-clusters: the unit of copy-on-write, zeroing and data checksums.
 * 4 KiB where the cluster allows, at most 32 per cluster (one u32 bitmap).
 */
export function subclustersFor(clusterSize: number): number {
  return Math.min(32, Math.max(1, clusterSize / 4096));
}

export function planLayout(deviceSize: number, clusterSize: number, regions: { journalBytes?: number; doubleWriteBytes?: number } = {}): PoolHeader {
  if (!Number.isInteger(Math.log2(clusterSize)) || clusterSize < MIN_CLUSTER || clusterSize > MAX_CLUSTER) {
    throw new PoolError('EINVAL', `cluster size ${clusterSize} must be a power of two from 4K to 2M`);
  }
  const C = clusterSize;
  // The copies region takes the last clusters of the device, as far from the primaries as the device allows.
  const total = Math.floor(deviceSize / C) - COPY_CLUSTERS;
  const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));
  const journalClusters = Math.max(4, Math.ceil((regions.journalBytes ?? clamp(deviceSize / 32, 1 << 20, 64 << 20)) / C));
  // A head and at least one slot; small areas only for tests and tiny pools.
  const dwClusters = regions.doubleWriteBytes !== undefined ? Math.max(2, Math.ceil(regions.doubleWriteBytes / C)) : Math.max(17, Math.ceil(clamp(deviceSize / 64, 1 << 20, 32 << 20) / C));
  const bitsPerBlock = (C - TRAILER) * 8;
  const bitmapBlocks = Math.ceil(total / bitsPerBlock);
  const journalStart = ROOT_CLUSTER + 1;
  const dwStart = journalStart + journalClusters;
  const bitmapStart = dwStart + dwClusters;
  const dataStart = bitmapStart + bitmapBlocks;
  if (dataStart + 16 > total) {
    throw new PoolError('EINVAL', `device of ${deviceSize} bytes is too small for a pool with ${C}-byte clusters (needs at least ${(dataStart + 16) * C})`);
  }
  return {
    version: VERSION,
    incompat: INCOMPAT_JOURNAL | INCOMPAT_SUBCLUSTERS | INCOMPAT_COPIES,
    compat: 0n,
    autoclear: 0n,
    clusterSize: C,
    subclusters: subclustersFor(C),
    uuid: randomUUID(),
    deviceSize,
    journalStart,
    journalClusters,
    dwStart,
    dwClusters,
    bitmapStart,
    bitmapBlocks,
    dataStart,
    totalClusters: total,
    created: Date.now(),
    copiesStart: total,
  };
}

export function encodeHeader(h: PoolHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(h.version, 8);
  b.writeUInt32LE(HEADER_BYTES, 12);
  b.writeBigUInt64LE(h.incompat, 16);
  b.writeBigUInt64LE(h.compat, 24);
  b.writeBigUInt64LE(h.autoclear, 32);
  b.writeUInt32LE(Math.log2(h.clusterSize), 40);
  b.writeUInt32LE(h.subclusters, 44);
  Buffer.from(h.uuid.replace(/-/g, ''), 'hex').copy(b, 48);
  const u64 = (v: number, at: number): void => void b.writeBigUInt64LE(BigInt(v), at);
  u64(h.deviceSize, 64);
  u64(h.journalStart, 72);
  u64(h.journalClusters, 80);
  u64(h.dwStart, 88);
  u64(h.dwClusters, 96);
  u64(h.bitmapStart, 104);
  u64(h.bitmapBlocks, 112);
  u64(h.dataStart, 120);
  u64(h.totalClusters, 128);
  u64(h.created, 136);
  if (h.incompat & INCOMPAT_COPIES) u64(h.copiesStart, 144);
  b.writeBigUInt64LE(metaChecksum(b.subarray(0, HEADER_BYTES - 8)), HEADER_BYTES - 8);
  return b;
}

/** Decodes and validates; every refusal names what is wrong. */
export function decodeHeader(b: Buffer, deviceName: string, deviceSize: number, at = 0): PoolHeader {
  const where = `${deviceName}: pool header (offset ${at})`;
  if (!b.subarray(0, 8).equals(MAGIC)) throw new PoolError('EFORMAT', `${deviceName} is not a Strata pool (no pool magic at offset ${at})`);
  if (b.readBigUInt64LE(HEADER_BYTES - 8) !== metaChecksum(b.subarray(0, HEADER_BYTES - 8))) {
    throw new PoolError('ECORRUPT', `${where} is damaged: checksum mismatch`);
  }
  const version = b.readUInt32LE(8);
  if (version !== VERSION) throw new PoolError('EFORMAT', `${where}: version ${version} is not supported (this Strata reads version ${VERSION})`);
  const incompat = b.readBigUInt64LE(16);
  const unknown = incompat & ~KNOWN_INCOMPAT;
  if (unknown) throw new PoolError('EFORMAT', `${where}: uses features this Strata does not know (incompatible bits 0x${unknown.toString(16)}); refusing to open`);
  const u64 = (at: number): number => Number(b.readBigUInt64LE(at));
  const hex = b.subarray(48, 64).toString('hex');
  const h: PoolHeader = {
    version,
    incompat,
    compat: b.readBigUInt64LE(24),
    autoclear: b.readBigUInt64LE(32),
    clusterSize: 2 ** b.readUInt32LE(40),
    subclusters: b.readUInt32LE(44),
    uuid: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
    deviceSize: u64(64),
    journalStart: u64(72),
    journalClusters: u64(80),
    dwStart: u64(88),
    dwClusters: u64(96),
    bitmapStart: u64(104),
    bitmapBlocks: u64(112),
    dataStart: u64(120),
    totalClusters: u64(128),
    created: u64(136),
    copiesStart: incompat & INCOMPAT_COPIES ? u64(144) : 0,
  };
  if (h.clusterSize < MIN_CLUSTER || h.clusterSize > MAX_CLUSTER || h.subclusters !== subclustersFor(h.clusterSize)) {
    throw new PoolError('ECORRUPT', `${where}: impossible cluster geometry (${h.clusterSize} bytes, ${h.subclusters} sub-clusters)`);
  }
  if (h.totalClusters * h.clusterSize > deviceSize) {
    throw new PoolError('ECORRUPT', `${where}: pool needs ${h.totalClusters * h.clusterSize} bytes but the device has ${deviceSize} (truncated?)`);
  }
  if (!(h.journalStart === ROOT_CLUSTER + 1 && h.dwStart === h.journalStart + h.journalClusters && h.bitmapStart === h.dwStart + h.dwClusters && h.dataStart === h.bitmapStart + h.bitmapBlocks && h.dataStart < h.totalClusters)) {
    throw new PoolError('ECORRUPT', `${where}: region table is inconsistent`);
  }
  if (h.incompat & INCOMPAT_COPIES) {
    const end = Math.floor(deviceSize / h.clusterSize);
    if (!(h.copiesStart >= h.dataStart && h.copiesStart + COPY_CLUSTERS <= end)) throw new PoolError('ECORRUPT', `${where}: copies region at cluster ${h.copiesStart} is outside the device`);
  }
  return h;
}
