import { isValidName, NAME_RULE, PoolError, type Pool, type VolumeInfo } from '../qcowlike/index.js';
import { checkNewName, snapshotRecord, templateRecord, volumeRecord } from './names.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChainJobOptions, SnapshotRef } from './types.js';

/** The frozen layer a snapshot or a template names. */
export function frozenLayer(pool: Pool, source: SnapshotRef | { template: string }): { layer: ReturnType<Pool['layerById']>; name: string } {
  if ('template' in source) return { layer: pool.layerById(templateRecord(pool, source.template).layer), name: source.template };
  return { layer: pool.layerById(snapshotRecord(pool, source).layer), name: `${source.volume}@${source.snapshot}` };
}

/**
 * A linked clone: a new volume whose map is a copy of the snapshot's or
 * template's L1, sharing every table and cluster with it until it writes.
 * Milliseconds at any size; clones of clones work the same at any depth.
 */
export async function cloneVolume(pool: Pool, source: SnapshotRef | { template: string }, name: string): Promise<VolumeInfo> {
  await pool.changeChain(async (change) => {
    checkNewName(pool, name, isValidName, NAME_RULE);
    const { layer } = frozenLayer(pool, source);
    await pool.enableSharing();
    const unhold = await pool.holdMaps([layer]);
    try {
      await change(() => {
        const next = pool.branchLayer(layer, false);
        pool.catalogNow.volumes.push({ name, layer: next.id, size: layer.size, created: next.rec.created, readOnly: false });
      }, unhold);
    } finally {
      unhold();
    }
  });
  return pool.volumeInfo(name);
}

/** Clusters a flatten step takes at once: small, so a guest write waits for at most this much copying. */
const FLATTEN_BATCH = 16;

/**
 * Detaches a volume from everything below it: every table and cluster it
 * inherits is copied into its own (a batch of clusters at a time, under the
 * same locks as a guest write), then its layer loses its parent in one
 * catalog change. Its snapshots keep their own history. Online; paced by
 * `rateBytesPerSec` of data copied; cancelling leaves a volume that reads
 * the same and is simply still a clone.
 */
export async function flattenVolume(pool: Pool, volume: string, opts: ChainJobOptions = {}): Promise<void> {
  const start = pool.layerById(volumeRecord(pool, volume).layer);
  if (!start.parent) return;
  const handle = await pool.openVolume(volume);
  const { clusterSize: C, entriesPerL2: P } = pool.geo;
  const began = performance.now();
  let copied = 0;
  try {
    const clusters = Math.ceil(handle.size / C);
    for (let first = 0; first < clusters; first += P) {
      const layer = handle.layer;
      if (layer !== start) throw new PoolError('EBUSY', `volume '${volume}' changed top layer during the flatten (a snapshot or a revert); run the flatten again`);
      await layer.ensure(first);
      const ref = layer.peek(first);
      if (ref === null) continue;
      for (let vc = first; vc < Math.min(clusters, first + P); vc += FLATTEN_BATCH) {
        copied += await handle.materialize(vc, Math.min(clusters, first + P, vc + FLATTEN_BATCH) - 1);
        opts.signal?.throwIfAborted();
        const rate = opts.rateBytesPerSec;
        if (rate !== undefined && rate > 0) {
          const due = (copied / rate) * 1000 - (performance.now() - began);
          if (due > 0) await sleep(due, undefined, { signal: opts.signal });
        }
      }
      opts.onProgress?.({ done: Math.min(clusters, first + P) * C, total: clusters * C });
    }
    const parent = await pool.changeChain(async (change) => {
      const top = pool.layerById(volumeRecord(pool, volume).layer);
      if (top !== start) throw new PoolError('EBUSY', `volume '${volume}' changed top layer during the flatten (a snapshot or a revert); run the flatten again`);
      const parent = top.parent;
      await change(() => {
        top.parent = null;
        top.rec.parent = null;
      });
      return parent;
    });
    if (parent) await pool.settleLayer(parent);
  } finally {
    await handle.close();
  }
}
