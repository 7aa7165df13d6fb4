import { TRAILER } from './metablock.js';

/**
 * The arithmetic of a pool's maps, fixed by its cluster size.
 *
 * An L2 entry is 16 + 4n bytes for n sub-clusters: u64 host cluster (0 = none),
 * u32 allocated bits, u32 zero bits, then one u32 xxh32 per sub-cluster. With
 * 64 KiB clusters that is 80 bytes, 819 entries (51 MiB of virtual disk) per
 * L2 block; an L1 block holds 8190 L2 pointers, so a 16 TiB volume needs 41
 * L1 blocks and its map is only ever in memory as far as the cache holds it.
 */
export interface Geometry {
  clusterSize: number;
  subclusters: number;
  subclusterSize: number;
  entrySize: number;
  entriesPerL2: number;
  entriesPerL1Block: number;
}

export function geometryFor(clusterSize: number, subclusters: number): Geometry {
  const entrySize = 16 + 4 * subclusters;
  return {
    clusterSize,
    subclusters,
    subclusterSize: clusterSize / subclusters,
    entrySize,
    entriesPerL2: Math.floor((clusterSize - TRAILER) / entrySize),
    entriesPerL1Block: Math.floor((clusterSize - TRAILER) / 8),
  };
}

/** How many L1 blocks a layer of `size` virtual bytes needs. */
export function l1BlocksFor(g: Geometry, size: number): number {
  const clusters = Math.ceil(size / g.clusterSize);
  const l2s = Math.ceil(clusters / g.entriesPerL2);
  return Math.max(1, Math.ceil(l2s / g.entriesPerL1Block));
}

export const ENTRY_HOST = 0;
export const ENTRY_ALLOC = 8;
export const ENTRY_ZERO = 12;
export const ENTRY_SUMS = 16;

export function readHost(l2: Buffer, at: number): number {
  return l2.readUInt32LE(at + ENTRY_HOST) + l2.readUInt16LE(at + ENTRY_HOST + 4) * 2 ** 32;
}

export function writeHost(l2: Buffer, at: number, cluster: number): void {
  l2.writeUInt32LE(cluster % 2 ** 32, at + ENTRY_HOST);
  l2.writeUInt32LE(Math.floor(cluster / 2 ** 32), at + ENTRY_HOST + 4);
}

export function readL1(l1: Buffer, index: number): number {
  return l1.readUInt32LE(index * 8) + l1.readUInt32LE(index * 8 + 4) * 2 ** 32;
}

export function writeL1(l1: Buffer, index: number, cluster: number): void {
  l1.writeUInt32LE(cluster % 2 ** 32, index * 8);
  l1.writeUInt32LE(Math.floor(cluster / 2 ** 32), index * 8 + 4);
}

/**
 * Bit 63 of an entry's host word (the top bit of byte 7; host clusters use
 * the low 48 bits): set when the host cluster is not the table owner's but an
 * ancestor's, reached through a table copied from it. Such a cluster is
 * shared and never written in place. writeHost clears it.
 */
const INHERITED_BYTE = ENTRY_HOST + 7;

export function isInherited(l2: Buffer, at: number): boolean {
  return (l2[at + INHERITED_BYTE]! & 0x80) !== 0;
}

export function setInherited(l2: Buffer, at: number): void {
  l2[at + INHERITED_BYTE] = l2[at + INHERITED_BYTE]! | 0x80;
}

export function clearInherited(l2: Buffer, at: number): void {
  l2[at + INHERITED_BYTE] = l2[at + INHERITED_BYTE]! & 0x7f;
}

/** The layer a metadata block belongs to, from its trailer. */
export function blockOwner(block: Buffer): number {
  return block.readUInt32LE(block.length - TRAILER + 4);
}
