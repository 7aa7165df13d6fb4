import { metaChecksum } from './checksum.js';
import { PoolError } from './errors.js';

/**
 * What the pool holds: layers (each one map), volumes (each the top of a chain
 * of layers) and snapshots (a name for a frozen layer). Stored as JSON in a run
 * of clusters that is rewritten whole on every change, into fresh clusters,
 * and switched to by one journaled change of the root block, so every catalog
 * change is atomic. It changes only on user operations, never on I/O.
 */
export interface CatalogLayer {
  id: number;
  parent: number | null;
  size: number;
  l1Start: number;
  l1Blocks: number;
  frozen: boolean;
  created: string;
  /** No volume or snapshot uses the layer any more; its clusters are being freed (finished at open after a crash). */
  reclaiming?: boolean;
}

export interface CatalogVolume {
  name: string;
  layer: number;
  size: number;
  created: string;
  readOnly: boolean;
  /**
   * Set when a copy into a new volume (an import) begins, cleared in the
   * commit that makes the last of the copy durable: a volume whose copy was
   * cut short still says so after a crash. Absent means complete.
   */
  incomplete?: true;
}

export interface CatalogSnapshot {
  volume: string;
  name: string;
  layer: number;
  created: string;
}

export interface Catalog {
  version: 1;
  nextLayerId: number;
  layers: CatalogLayer[];
  volumes: CatalogVolume[];
  snapshots: CatalogSnapshot[];
}

export function emptyCatalog(): Catalog {
  return { version: 1, nextLayerId: 1, layers: [], volumes: [], snapshots: [] };
}

/** Root block layout: u64 first cluster, u32 clusters, u32 bytes, u64 xxh64 of the bytes. */
export interface CatalogPointer {
  start: number;
  clusters: number;
  bytes: number;
  hash: bigint;
}

export function readPointer(root: Buffer): CatalogPointer {
  return { start: Number(root.readBigUInt64LE(0)), clusters: root.readUInt32LE(8), bytes: root.readUInt32LE(12), hash: root.readBigUInt64LE(16) };
}

export function writePointer(root: Buffer, p: CatalogPointer): void {
  root.writeBigUInt64LE(BigInt(p.start), 0);
  root.writeUInt32LE(p.clusters, 8);
  root.writeUInt32LE(p.bytes, 12);
  root.writeBigUInt64LE(p.hash, 16);
}

export const POINTER_BYTES = 24;

export function encodeCatalog(c: Catalog): Buffer {
  return Buffer.from(JSON.stringify(c), 'utf8');
}

export function decodeCatalog(bytes: Buffer, p: CatalogPointer, where: string): Catalog {
  if (metaChecksum(bytes) !== p.hash) throw new PoolError('ECORRUPT', `${where}: catalog checksum mismatch`);
  let c: Catalog;
  try {
    c = JSON.parse(bytes.toString('utf8')) as Catalog;
  } catch {
    throw new PoolError('ECORRUPT', `${where}: catalog is not valid JSON`);
  }
  if (c.version !== 1 || !Array.isArray(c.layers) || !Array.isArray(c.volumes)) throw new PoolError('ECORRUPT', `${where}: catalog has an unknown shape`);
  c.snapshots ??= [];
  return c;
}
