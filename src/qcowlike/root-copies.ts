import { COPY_POINTER_AT, POINTER_BYTES, ROOT_BYTES, ROOT_SEQUENCE_AT, writePointer, type CatalogPointer } from './catalog.js';
import { INCOMPAT_COPIES, ROOT_CLUSTER, type PoolHeader } from './header.js';
import { damageReason } from './errors.js';
import { BlockType, TRAILER } from './metablock.js';
import type { MetaStore } from './metastore.js';
import type { CheckProblem } from './types.js';

/**
 * The root block and, in pools with copies, its copy: the first cluster of
 * the copies region, a root block with owner 1. Both change in the same
 * journal transaction, so they agree after any crash; the sequence at byte
 * 48 still orders them, should one ever be left behind.
 */
export function rootClusters(h: PoolHeader): Array<{ cluster: number; owner: number }> {
  return h.incompat & INCOMPAT_COPIES ? [{ cluster: ROOT_CLUSTER, owner: 0 }, { cluster: h.copiesStart, owner: 1 }] : [{ cluster: ROOT_CLUSTER, owner: 0 }];
}

/** Creates the root (and its copy) of a new pool, pinned and zeroed. */
export function createRoot(store: MetaStore, h: PoolHeader): void {
  for (const r of rootClusters(h)) store.create(r.cluster, BlockType.Root, r.owner, true);
}

/**
 * Loads the root and its copy, pinned. When one is damaged (or behind the
 * other) it is replaced by the one that verifies: rewritten at the next
 * checkpoint on a writable pool, only in memory on a read-only one. Returns
 * what it found; throws the primary's error when no copy verifies.
 */
export async function loadRoot(store: MetaStore, h: PoolHeader, readOnly: boolean): Promise<CheckProblem[]> {
  const C = store.clusterSize;
  const found: Array<{ cluster: number; owner: number; buf?: Buffer; err?: unknown }> = [];
  for (const r of rootClusters(h)) {
    try {
      found.push({ ...r, buf: await store.load(r.cluster, BlockType.Root, r.owner, true) });
    } catch (err) {
      found.push({ ...r, err });
    }
  }
  const seq = (b: Buffer): bigint => (rootClusters(h).length > 1 ? b.readBigUInt64LE(ROOT_SEQUENCE_AT) : 0n);
  let best: (typeof found)[number] | undefined;
  for (const f of found) if (f.buf && (!best || seq(f.buf) > seq(best.buf!))) best = f;
  if (!best) throw found[0]!.err;
  const good = best.buf!;
  const notes: CheckProblem[] = [];
  for (const f of found) {
    if (f === best || f.buf?.subarray(0, C - TRAILER).equals(good.subarray(0, C - TRAILER))) continue;
    const what = f.owner === 0 ? 'root block' : 'copy of the root block';
    const why = f.buf ? `sequence ${seq(f.buf)}, behind ${seq(good)}` : damageReason(f.err);
    if (readOnly) {
      const copy = Buffer.from(good);
      store.install(f.cluster, copy, BlockType.Root, f.owner);
    } else {
      const fresh = store.create(f.cluster, BlockType.Root, f.owner, true);
      good.copy(fresh, 0, 0, C - TRAILER);
      store.markDirty(f.cluster, 0, C - TRAILER);
    }
    notes.push({ kind: 'root', hostOffset: f.cluster * C, message: `${what} at offset ${f.cluster * C} is damaged (${why}); ${readOnly ? 'read from' : 'rewritten from'} the ${f.owner === 0 ? 'copy' : 'root block'}`, repaired: !readOnly });
  }
  return notes;
}

/** Points the root (and its copy) at the catalog and its second copy; journaled at the next commit. Synchronous. */
export function setRoot(store: MetaStore, h: PoolHeader, catalog: CatalogPointer, second: CatalogPointer | undefined): void {
  const copies = rootClusters(h);
  for (const { cluster } of copies) {
    const root = store.peek(cluster)!;
    writePointer(root, catalog);
    if (copies.length > 1) {
      writePointer(root, second ?? { start: 0, clusters: 0, bytes: 0, hash: 0n }, COPY_POINTER_AT);
      root.writeBigUInt64LE(root.readBigUInt64LE(ROOT_SEQUENCE_AT) + 1n, ROOT_SEQUENCE_AT);
    }
    store.markDirty(cluster, 0, copies.length > 1 ? ROOT_BYTES : POINTER_BYTES);
  }
}

/**
 * Where the root keeps the catalog runs the last rewrite left behind (two
 * slots of u64 first cluster, u32 clusters, u32 zero; start 0 = none): a
 * hint for the next rewrite, which takes a run only if it is still free.
 */
const SPARES_AT = 56;
const SPARE_SLOTS = 2;

export function readCatalogSpares(store: MetaStore, h: PoolHeader): Array<{ start: number; clusters: number }> {
  const root = store.peek(rootClusters(h)[0]!.cluster)!;
  const out: Array<{ start: number; clusters: number }> = [];
  for (let i = 0; i < SPARE_SLOTS; i++) {
    const start = Number(root.readBigUInt64LE(SPARES_AT + 16 * i));
    const clusters = root.readUInt32LE(SPARES_AT + 16 * i + 8);
    if (start !== 0 && clusters > 0) out.push({ start, clusters });
  }
  return out;
}

/** Records the runs a catalog rewrite leaves; journaled with the root at the next commit. Synchronous. */
export function setCatalogSpares(store: MetaStore, h: PoolHeader, runs: ReadonlyArray<{ start: number; clusters: number }>): void {
  for (const { cluster } of rootClusters(h)) {
    const root = store.peek(cluster)!;
    for (let i = 0; i < SPARE_SLOTS; i++) {
      const r = runs[i];
      root.writeBigUInt64LE(BigInt(r?.start ?? 0), SPARES_AT + 16 * i);
      root.writeUInt32LE(r?.clusters ?? 0, SPARES_AT + 16 * i + 8);
      root.writeUInt32LE(0, SPARES_AT + 16 * i + 12);
    }
    store.markDirty(cluster, SPARES_AT, 16 * SPARE_SLOTS);
  }
}
