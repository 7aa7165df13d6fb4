import { diffLayers, type Pool, type VolumeHandle } from '../qcowlike/index.js';
import { frozenLayer } from './clones.js';
import { snapshotRecord, volumeRecord } from './names.js';
import type { DiffExtent, SnapshotRef } from './types.js';

/** A read-only handle on a snapshot or a template, counted under its name (`vol@snap`, `tmpl`) while open. */
export async function openFrozen(pool: Pool, source: SnapshotRef | { template: string }): Promise<VolumeHandle> {
  const { layer, name } = frozenLayer(pool, source);
  return pool.openLayer(layer, name);
}

export function frozenRecords(pool: Pool): { snapshots: Array<{ volume: string; name: string; uuid: string; size: number }>; templates: Array<{ name: string; uuid: string; size: number }> } {
  const c = pool.catalogNow;
  return {
    snapshots: c.snapshots.map((s) => ({ volume: s.volume, name: s.name, uuid: s.uuid, size: pool.layerById(s.layer).size })),
    templates: c.templates.map((t) => ({ name: t.name, uuid: t.uuid, size: pool.layerById(t.layer).size })),
  };
}

/** Changed ranges between snapshot `from` (null: empty) and snapshot `to` (null: the volume now), from the maps alone. */
export async function* diffRanges(pool: Pool, volume: string, from: string | null, to: string | null): AsyncGenerator<DiffExtent> {
  const vol = volumeRecord(pool, volume);
  const a = from === null ? null : pool.layerById(snapshotRecord(pool, { volume, snapshot: from }).layer);
  const b = pool.layerById(to === null ? vol.layer : snapshotRecord(pool, { volume, snapshot: to }).layer);
  yield* diffLayers(pool, a, b);
}
