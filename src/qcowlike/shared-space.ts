import type { PoolCore } from './core.js';
import { ENTRY_ALLOC, clearInherited, isInherited, readHost, writeHost } from './geometry.js';
import type { Layer } from './layer.js';

/**
 * What a frozen layer holds that nothing else reads: its own clusters that
 * none of its children maps. Sharing only ever passes from a layer to its
 * children (a child's map starts as a copy of its parent's), so a cluster of
 * the layer's own that no child maps is mapped by no descendant either.
 */

/** Every L2 table of `layer`'s own: [first virtual cluster it maps, its cluster]. */
export async function* ownTables(layer: Layer): AsyncGenerator<[number, number]> {
  for await (const [firstVc, l2c] of layer.tables()) {
    const ref = await layer.lookup(firstVc);
    if (ref && ref.l2Cluster === l2c && layer.ownsTable(ref)) yield [firstVc, l2c];
  }
}

/** Holds the span of one table in every layer given (in id order, so two callers never deadlock). */
async function lockSpan(layers: Layer[], firstVc: number, lastVc: number): Promise<() => void> {
  const releases: Array<() => void> = [];
  for (const l of [...layers].sort((a, b) => a.id - b.id)) releases.push(await l.lock.acquire(firstVc, lastVc, true));
  return () => releases.forEach((r) => r());
}

/** Brings the table at `firstVc` of every layer into memory and keeps it there until released. */
async function holdAll(layers: Layer[], firstVc: number): Promise<() => void> {
  const releases: Array<() => void> = [];
  for (const l of layers) releases.push(await l.hold(firstVc));
  return () => releases.forEach((r) => r());
}

/**
 * Runs `step` on one table span of `layer` with its children held and the
 * write gate entered, every table it needs in memory (retried until so).
 */
async function underSpan(core: PoolCore, layer: Layer, children: Layer[], firstVc: number, step: () => boolean): Promise<void> {
  const P = core.geo.entriesPerL2;
  const all = [layer, ...children];
  const release = await lockSpan(all, firstVc, firstVc + P - 1);
  try {
    for (;;) {
      const held = await holdAll(all, firstVc);
      const gate = core.store.enter();
      if (gate) await gate;
      try {
        if (step()) return;
      } finally {
        core.store.exit();
        held();
      }
    }
  } finally {
    release();
  }
}

/** A child maps `host` at entry `at` of its table for the span (a table of its own, the entry inherited). */
function childMaps(child: Layer, firstVc: number, at: number, host: number): boolean | undefined {
  const ref = child.peek(firstVc);
  if (ref === undefined) return undefined;
  if (ref === null || !child.ownsTable(ref)) return false;
  return readHost(ref.l2, at) === host && isInherited(ref.l2, at);
}

/** Bytes of data `layer` alone holds (metadata only). */
export async function exclusiveBytes(core: PoolCore, layer: Layer, children: Layer[]): Promise<number> {
  const { entriesPerL2: P, entrySize: E, subclusterSize: S } = core.geo;
  let subclusters = 0;
  for await (const [firstVc, l2c] of ownTables(layer)) {
    const held = await holdAll([layer, ...children], firstVc);
    try {
      const ref = layer.peek(firstVc);
      if (!ref || children.some((c) => c.tableAt(firstVc) === l2c)) continue;
      for (let e = 0; e < P; e++) {
        const at = e * E;
        const host = readHost(ref.l2, at);
        if (host === 0 || isInherited(ref.l2, at)) continue;
        if (!children.some((c) => childMaps(c, firstVc, at, host) === true)) subclusters += popcount(ref.l2.readUInt32LE(at + ENTRY_ALLOC));
      }
    } finally {
      held();
    }
  }
  return subclusters * S;
}

export interface SpanProgress {
  (doneTables: number): Promise<void> | void;
}

/**
 * Frees what a frozen layer that no name refers to holds alone, keeping what
 * its children still map (a deleted snapshot shared by several). Each table
 * is one step under the gate with the children's writes held off, so a
 * commit sees a map and a bitmap that agree. Returns the bytes freed.
 */
export async function trimUnshared(core: PoolCore, layer: Layer, children: Layer[], progress?: SpanProgress): Promise<number> {
  const { entriesPerL2: P, entrySize: E, subclusterSize: S } = core.geo;
  let freed = 0;
  let done = 0;
  for await (const [firstVc, l2c] of ownTables(layer)) {
    await underSpan(core, layer, children, firstVc, () => {
      const ref = layer.peek(firstVc);
      if (ref === undefined || children.some((c) => c.tableAt(firstVc) === undefined || c.peek(firstVc) === undefined)) return false;
      if (ref === null || ref.l2Cluster !== l2c || children.some((c) => c.tableAt(firstVc) === l2c)) return true;
      let left = 0;
      for (let e = 0; e < P; e++) {
        const at = e * E;
        const host = readHost(ref.l2, at);
        if (host === 0 || isInherited(ref.l2, at)) {
          if (host !== 0) left++;
          continue;
        }
        if (children.some((c) => childMaps(c, firstVc, at, host) === true)) {
          left++;
          continue;
        }
        freed += popcount(ref.l2.readUInt32LE(at + ENTRY_ALLOC)) * S;
        core.alloc.free(host, { punch: true });
        writeHost(ref.l2, at, 0);
        ref.l2.writeUInt32LE(0, at + ENTRY_ALLOC);
        core.store.markDirty(ref.l2Cluster, at, 12);
      }
      if (left === 0) dropTable(core, layer, firstVc, l2c);
      return true;
    });
    await progress?.(++done);
    if (core.store.wantsCommit) await core.store.commit();
  }
  return freed;
}

/**
 * Hands everything of a frozen, nameless layer's own to its only child: a
 * table they share becomes the child's, and in the child's own tables each
 * entry that maps one of the layer's clusters becomes the child's own; what
 * the child no longer maps is freed. Each table's step clears the layer's L1
 * entry in the same transaction, so the L1 lists exactly what is left to do
 * and a crash anywhere leaves a map that the next open finishes merging.
 * The caller then takes the layer out of the chain. Returns bytes freed.
 */
export async function mergeIntoChild(core: PoolCore, layer: Layer, child: Layer, progress?: SpanProgress): Promise<number> {
  const { entriesPerL2: P, entrySize: E, subclusterSize: S } = core.geo;
  let freed = 0;
  let done = 0;
  for await (const [firstVc, l2c] of ownTables(layer)) {
    await underSpan(core, layer, [child], firstVc, () => {
      const ref = layer.peek(firstVc);
      const childTable = child.tableAt(firstVc);
      if (ref === undefined || childTable === undefined) return false;
      if (ref === null || ref.l2Cluster !== l2c) return true;
      if (childTable === l2c) {
        core.store.reown(l2c, child.id);
        layer.clearTable(firstVc);
        return true;
      }
      const cref = childTable === 0 ? null : child.peek(firstVc);
      if (cref === undefined) return false;
      const childOwn = cref !== null && child.ownsTable(cref);
      for (let e = 0; e < P; e++) {
        const at = e * E;
        const host = readHost(ref.l2, at);
        if (host === 0 || isInherited(ref.l2, at)) continue;
        if (childOwn && readHost(cref.l2, at) === host && isInherited(cref.l2, at)) {
          clearInherited(cref.l2, at);
          core.store.markDirty(cref.l2Cluster, at, 8);
        } else {
          freed += popcount(ref.l2.readUInt32LE(at + ENTRY_ALLOC)) * S;
          core.alloc.free(host, { punch: true });
        }
      }
      dropTable(core, layer, firstVc, l2c);
      return true;
    });
    await progress?.(++done);
    if (core.store.wantsCommit) await core.store.commit();
  }
  return freed;
}

/** Unhooks a table of the layer's own from its L1 and frees it, in the same step. */
function dropTable(core: PoolCore, layer: Layer, firstVc: number, l2c: number): void {
  layer.clearTable(firstVc);
  core.store.forget(l2c);
  core.alloc.free(l2c, { metadata: true, punch: true });
}

/** How many tables of its own a layer has (the total a merge or trim reports progress against). */
export async function countOwnTables(layer: Layer): Promise<number> {
  let n = 0;
  for await (const _ of ownTables(layer)) n++;
  return n;
}

export function popcount(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}
