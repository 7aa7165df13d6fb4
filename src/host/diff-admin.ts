import { isValidName, type Pool } from '../qcowlike/index.js';
import { diffRanges, type DiffExtent } from '../snapshot/index.js';
import { findSnapshot } from './diff-points.js';

/** `strata diff`: the ranges that differ between snapshot `from` and snapshot `to` (null: the volume now), from metadata alone. */
export interface DiffRequest {
  op: 'diff';
  volume: string;
  from: string;
  to: string | null;
}

export async function runDiff(pool: Pool, poolName: string, req: DiffRequest): Promise<DiffExtent[]> {
  // Looked up first, so that a missing snapshot is named as the user typed it.
  await findSnapshot(pool, poolName, req.volume, req.from);
  if (req.to !== null) await findSnapshot(pool, poolName, req.volume, req.to);
  const out: DiffExtent[] = [];
  for await (const e of diffRanges(pool, req.volume, req.from, req.to)) {
    const last = out[out.length - 1];
    // Neighbours of one kind read as one range, as rbd diff prints them.
    if (last && last.kind === e.kind && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ offset: e.offset, length: e.length, kind: e.kind });
  }
  return out;
}

/** A snapshot name field of a control request, or null where `nullable`. */
export function snapshotField(raw: Record<string, unknown>, key: string, nullable: boolean): string | null {
  const v = raw[key] ?? null;
  if (v === null && nullable) return null;
  if (typeof v !== 'string' || !isValidName(v)) throw new Error(`'${String(raw.op)}' needs '${key}' (a snapshot name${nullable ? ', or null' : ''})`);
  return v;
}

export function parseDiffRequest(raw: Record<string, unknown>, volume: string): DiffRequest {
  return { op: 'diff', volume, from: snapshotField(raw, 'from', false)!, to: snapshotField(raw, 'to', true) };
}
