import { createHash } from 'node:crypto';
import type { Layer, Pool } from '../qcowlike/index.js';
import type { SnapshotRef } from '../snapshot/index.js';
import type { DiffPoint } from '../snapshot/diff-stream.js';
import { AdminError } from '../host/admin.js';
import { findSnapshot } from '../host/diff-points.js';
import type { SendSection } from './send-stream.js';

/** Snapshots taken only to send a volume as it is now carry this prefix; the receiver merges the last one away. */
export const TEMPORARY_PREFIX = 'send-tmp-';

export function isTemporary(snapshot: string): boolean {
  return snapshot.startsWith(TEMPORARY_PREFIX);
}

/** One section as the sender reads it: the two layers it lies between. */
export interface SendStep extends SendSection {
  fromLayer: Layer | null;
  toLayer: Layer;
  toSource: SnapshotRef | { template: string };
}

export interface SendPlan {
  steps: SendStep[];
  /** The identity a resumed stream must share: its sections' end points. */
  stream: string;
}

/**
 * The sections that carry snapshot `to` of `volume`: its ancestors among the
 * volume's own snapshots, oldest first, each a diff from the one before.
 * Only TO's history is followed (a revert leaves later snapshots on another
 * branch; they are not part of it). Without `from`, a volume that is a
 * linked clone is preceded by its origin (the template, or the other
 * volume's snapshot, its history starts from) as a full base section, so
 * the receiver can share it among the clones it receives.
 */
interface History {
  /** The volume's own snapshots at and above `from`, oldest first. */
  points: Array<{ layer: Layer; point: DiffPoint; ref: SnapshotRef }>;
  /** The first layer below them that another name holds: the template or other volume's snapshot the volume is a clone of. */
  origin: { layer: Layer; point: DiffPoint; source: SnapshotRef | { template: string } } | null;
}

/** The ancestry of layer `from` of `volume`: its own snapshots, then its origin, if any. */
export function historyOf(pool: Pool, volume: string, from: Layer): History {
  const c = pool.catalogNow;
  const points: History['points'] = [];
  let origin: History['origin'] = null;
  for (let layer: Layer | null = from; layer; layer = layer.parent) {
    const id = layer.id;
    const own = c.snapshots.find((s) => s.volume === volume && s.layer === id);
    if (own) {
      points.unshift({ layer, point: { uuid: own.uuid, name: own.name }, ref: { volume, snapshot: own.name } });
      continue;
    }
    const tmpl = c.templates.find((t) => t.layer === id);
    const other = c.snapshots.find((s) => s.layer === id);
    if (tmpl) origin = { layer, point: { uuid: tmpl.uuid, name: tmpl.name }, source: { template: tmpl.name } };
    else if (other) origin = { layer, point: { uuid: other.uuid, name: `${other.volume}@${other.name}` }, source: { volume: other.volume, snapshot: other.name } };
    // A nameless layer (a deleted snapshot several children still share) is passed through: diffs compare maps, not ancestry.
    if (origin) break;
  }
  return { points, origin };
}

export async function planSend(pool: Pool, poolName: string, req: { volume: string; to: string; from: string | null }): Promise<SendPlan> {
  const to = await findSnapshot(pool, poolName, req.volume, req.to);
  const { points, origin } = historyOf(pool, req.volume, pool.layerById(to.layer));
  let first = 0;
  let base: { layer: Layer | null; point: DiffPoint | null } = origin ? { layer: origin.layer, point: origin.point } : { layer: null, point: null };
  const steps: SendStep[] = [];
  if (req.from !== null) {
    const at = points.findIndex((p) => p.point.name === req.from);
    if (at < 0) {
      await findSnapshot(pool, poolName, req.volume, req.from);
      throw new AdminError('EINVAL', `${poolName}/${req.volume}@${req.from} is not an earlier snapshot in the history of @${req.to}: an incremental stream runs from an ancestor`);
    }
    if (at === points.length - 1) throw new AdminError('EINVAL', `--from @${req.from} is @${req.to} itself: nothing to send`);
    base = { layer: points[at]!.layer, point: points[at]!.point };
    first = at + 1;
  } else if (origin) {
    steps.push({ from: null, to: origin.point, size: origin.layer.size, base: true, fromLayer: null, toLayer: origin.layer, toSource: origin.source });
  }
  for (const p of points.slice(first)) {
    steps.push({ from: base.point, to: p.point, size: p.layer.size, fromLayer: base.layer, toLayer: p.layer, toSource: p.ref });
    base = { layer: p.layer, point: p.point };
  }
  const stream = createHash('sha256')
    .update(JSON.stringify([req.volume, ...steps.map((s) => [s.from?.uuid ?? null, s.to.uuid])]))
    .digest('hex')
    .slice(0, 32);
  return { steps, stream };
}
