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
  /** The volume (or the template it became) whose history this is. */
  volume: string;
  name: string;
  layer: number;
  created: string;
  uuid: string;
}

/** A frozen layer kept to be cloned: read-only, protected while anything depends on it. */
export interface CatalogTemplate {
  name: string;
  layer: number;
  created: string;
  uuid: string;
  /** What it was made from (`vol`, `vol@snap`, `tmpl`). */
  origin?: string;
  /**
   * The virtual machine the template came with (an imported package's name,
   * OS, CPUs, memory, disks, networks), kept to be shown and written back on
   * export; at most MAX_SETTINGS_BYTES of JSON. Absent: none.
   */
  settings?: TemplateSettings;
}

/** A JSON value as the catalog stores it. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
/** A template's settings: a JSON object whose shape the package layer owns (src/package). */
export type TemplateSettings = { [key: string]: JsonValue };
/** Bytes of JSON a template's settings may take: the catalog is rewritten whole on every change, so it stays small; a request that carries them fits in a control-socket line (256 KiB). */
export const MAX_SETTINGS_BYTES = 64 * 1024;

export interface Catalog {
  version: 1;
  nextLayerId: number;
  layers: CatalogLayer[];
  volumes: CatalogVolume[];
  snapshots: CatalogSnapshot[];
  templates: CatalogTemplate[];
}

export function emptyCatalog(): Catalog {
  return { version: 1, nextLayerId: 1, layers: [], volumes: [], snapshots: [], templates: [] };
}

/**
 * Root block layout: the catalog pointer (u64 first cluster, u32 clusters,
 * u32 bytes, u64 xxh64 of the bytes) at 0; in pools with copies, the pointer
 * to the catalog's second copy at 24 (start 0 = none) and a u64 sequence at
 * 48, bumped on every catalog write, that orders the root and its copy.
 */
export interface CatalogPointer {
  start: number;
  clusters: number;
  bytes: number;
  hash: bigint;
}

export function readPointer(root: Buffer, at = 0): CatalogPointer {
  return { start: Number(root.readBigUInt64LE(at)), clusters: root.readUInt32LE(at + 8), bytes: root.readUInt32LE(at + 12), hash: root.readBigUInt64LE(at + 16) };
}

export function writePointer(root: Buffer, p: CatalogPointer, at = 0): void {
  root.writeBigUInt64LE(BigInt(p.start), at);
  root.writeUInt32LE(p.clusters, at + 8);
  root.writeUInt32LE(p.bytes, at + 12);
  root.writeBigUInt64LE(p.hash, at + 16);
}

export const POINTER_BYTES = 24;
/** Where the second copy's pointer and the root's sequence sit. */
export const COPY_POINTER_AT = 24;
export const ROOT_SEQUENCE_AT = 48;
/** Bytes of the root that a pool with copies writes. */
export const ROOT_BYTES = 56;

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
  c.templates ??= [];
  return c;
}
