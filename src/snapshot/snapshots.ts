import { randomUUID } from 'node:crypto';
import { isValidName, NAME_RULE, PoolError, type Layer, type Pool } from '../qcowlike/index.js';
import { dependants, layerName, snapshotRecord, volumeRecord } from './names.js';
import { putNewTop } from './new-top.js';
import { holdWhole } from './quiesce.js';
import { paced } from './pace.js';
import type { ChainJobOptions, SnapshotInfo, SnapshotRef } from './types.js';

/**
 * Freezes each volume's top layer and puts a new one over it that shares its
 * whole map, all in one journal transaction: a crash-consistent group. No
 * data moves and only L1 blocks are written, so it takes the same time at
 * any volume size. In-flight requests finish before and new ones wait until
 * the new tops are in place (one catalog write).
 */
export async function createSnapshots(pool: Pool, refs: SnapshotRef[]): Promise<SnapshotInfo[]> {
  if (refs.length === 0) throw new PoolError('EINVAL', 'no snapshot named');
  const seen = new Set<string>();
  for (const r of refs) {
    if (!isValidName(r.snapshot)) throw new PoolError('EINVAL', `invalid snapshot name '${r.snapshot}' (${NAME_RULE})`);
    if (seen.has(r.volume)) throw new PoolError('EINVAL', `volume '${r.volume}' is named twice in one snapshot group`);
    seen.add(r.volume);
  }
  return pool.changeChain(async (change) => {
    const items = refs.map((ref) => {
      const vol = volumeRecord(pool, ref.volume);
      if (vol.readOnly) throw new PoolError('EROFS', `volume '${ref.volume}' is read-only`);
      if (pool.catalogNow.snapshots.some((s) => s.volume === ref.volume && s.name === ref.snapshot)) throw new PoolError('EEXIST', `snapshot '${ref.volume}@${ref.snapshot}' already exists`);
      return { ref, vol, top: pool.layerById(vol.layer) };
    });
    const tops = items.map((i) => i.top);
    await pool.enableSharing();
    const unhold = await pool.holdMaps(tops);
    const release = await holdWhole(tops);
    const created = new Date().toISOString();
    const made: SnapshotInfo[] = [];
    try {
      await change(
        () => {
          for (const { ref, vol, top } of items) {
            putNewTop(pool, vol, top);
            top.rec.frozen = true;
            const uuid = randomUUID();
            pool.catalogNow.snapshots.push({ volume: ref.volume, name: ref.snapshot, layer: top.id, created, uuid });
            made.push({ volume: ref.volume, name: ref.snapshot, uuid, created, size: top.size, layer: top.id, exclusiveBytes: 0, dependants: [] });
          }
        },
        release,
      );
    } finally {
      release();
      unhold();
    }
    return made;
  });
}

/** A volume's snapshots, oldest first, with what each alone holds. */
export async function listSnapshots(pool: Pool, volume: string): Promise<SnapshotInfo[]> {
  volumeRecord(pool, volume);
  const out: SnapshotInfo[] = [];
  for (const s of pool.catalogNow.snapshots.filter((x) => x.volume === volume)) out.push(await snapshotInfo(pool, s));
  return out.sort((a, b) => a.created.localeCompare(b.created) || a.layer - b.layer);
}

export async function snapshotInfo(pool: Pool, s: Pool['catalogNow']['snapshots'][number]): Promise<SnapshotInfo> {
  const layer = pool.layerById(s.layer);
  return { volume: s.volume, name: s.name, uuid: s.uuid, created: s.created, size: layer.size, layer: s.layer, exclusiveBytes: await pool.exclusiveBytes(layer), dependants: dependants(pool, layer, s.volume) };
}

/**
 * Takes the snapshot's name away at once (one commit), then gives its space
 * back: a snapshot nothing reads is reclaimed, one with a single child merges
 * into it, one shared by several keeps only what they read (docs/FORMAT.md).
 * The merging goes a table at a time, at `rateBytesPerSec` of virtual space;
 * cancelling stops it, and the next open of the pool finishes it.
 */
export async function deleteSnapshot(pool: Pool, ref: SnapshotRef, opts: ChainJobOptions = {}): Promise<{ freedBytes: number }> {
  let layer: Layer | undefined;
  await pool.changeChain(async (change) => {
    const rec = snapshotRecord(pool, ref);
    const name = `${ref.volume}@${ref.snapshot}`;
    if (pool.openCount(name) > 0) throw new PoolError('EBUSY', `snapshot '${name}' is open (exported to a client); disconnect it first`);
    const l = pool.layerById(rec.layer);
    const deps = dependants(pool, l, ref.volume);
    if (deps.length > 0) throw new PoolError('EBUSY', `snapshot '${name}' has dependent clones: ${deps.join(', ')} (delete or flatten them first)`);
    await change(() => {
      pool.catalogNow.snapshots.splice(pool.catalogNow.snapshots.indexOf(rec), 1);
    });
    layer = l;
  });
  const span = pool.geo.entriesPerL2 * pool.geo.clusterSize;
  // Beside the admin queue: other commands go on while it merges.
  const freedBytes = await pool.settleLayer(layer!, paced(opts, span));
  return { freedBytes };
}

/**
 * Rolls a volume back to a snapshot: a new top sharing the snapshot's map
 * replaces the volume's top, whose own data is freed. Later snapshots stay
 * (they branch off the same history). Refused while the volume is open
 * unless forced; forced, open handles see the snapshot's contents from the
 * next request on.
 */
export async function revertSnapshot(pool: Pool, ref: SnapshotRef, opts: { force?: boolean } = {}): Promise<void> {
  let old: Layer | undefined;
  await pool.changeChain(async (change) => {
    const vol = volumeRecord(pool, ref.volume);
    const rec = snapshotRecord(pool, ref);
    const open = pool.openCount(ref.volume);
    if (open > 0 && opts.force !== true) throw new PoolError('EBUSY', `volume '${ref.volume}' is open by ${open} client${open === 1 ? '' : 's'}; a revert would change the disk under ${open === 1 ? 'it' : 'them'} (force it, or disconnect first)`);
    const snap = pool.layerById(rec.layer);
    const top = pool.layerById(vol.layer);
    await pool.enableSharing();
    const unhold = await pool.holdMaps([snap]);
    const release = await holdWhole([top]);
    try {
      await change(
        () => {
          putNewTop(pool, vol, snap);
          vol.size = snap.size;
          top.rec.reclaiming = true;
        },
        release,
      );
    } finally {
      release();
      unhold();
    }
    old = top;
  });
  await pool.reclaimAndSettle(old!);
}

export { layerName };
