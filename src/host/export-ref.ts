import type { Pool } from '../qcowlike/index.js';
import { AdminError } from './admin.js';
import { checkName } from './registry.js';
import { parseSnapshotRef } from './snapshot-ref.js';

/**
 * What `strata export POOL/NAME` and `POOL/VOL@SNAP` read: a volume, one of
 * its snapshots, or a template (volumes and templates share one name space
 * in a pool, so `POOL/NAME` is never both).
 */
export type ExportedLayer = { kind: 'volume'; volume: string } | { kind: 'snapshot'; volume: string; snapshot: string } | { kind: 'template'; template: string };

export interface ExportRef {
  pool: string;
  name: string;
  snapshot: string | null;
}

/** `POOL/NAME` or `POOL/VOL@SNAP`, every name checked. */
export function parseExportRef(ref: string): ExportRef {
  if (ref.includes('@')) {
    const s = parseSnapshotRef(ref);
    return { pool: s.pool, name: s.volume, snapshot: s.snapshot };
  }
  const parts = ref.split('/');
  if (parts.length !== 2) throw new Error(`invalid name '${ref}' (expected POOL/VOL, POOL/VOL@SNAP or POOL/TEMPLATE, e.g. pool0/vm1)`);
  return { pool: checkName('pool', parts[0]!), name: checkName('volume', parts[1]!), snapshot: null };
}

/** What a pool holds by name: its catalog in-process, the control socket of a served one. */
export interface PoolNames {
  isVolume(name: string): Promise<boolean>;
  isTemplate(name: string): Promise<boolean>;
  hasSnapshot(volume: string, snapshot: string): Promise<boolean>;
}

/** What the name stands for in the pool, or a one-line refusal saying what it is not. */
export async function resolveExportRef(r: ExportRef, names: PoolNames): Promise<ExportedLayer> {
  if (r.snapshot !== null) {
    if (!(await names.isVolume(r.name))) {
      if (await names.isTemplate(r.name)) throw new AdminError('EINVAL', `'${r.name}' in pool '${r.pool}' is a template, which has no snapshots (export ${r.pool}/${r.name})`);
      throw new AdminError('ENOENT', `volume '${r.name}' not found in pool '${r.pool}'`);
    }
    if (!(await names.hasSnapshot(r.name, r.snapshot))) throw new AdminError('ENOENT', `snapshot '${r.name}@${r.snapshot}' not found in pool '${r.pool}'`);
    return { kind: 'snapshot', volume: r.name, snapshot: r.snapshot };
  }
  if (await names.isVolume(r.name)) return { kind: 'volume', volume: r.name };
  if (await names.isTemplate(r.name)) return { kind: 'template', template: r.name };
  throw new AdminError('ENOENT', `volume, snapshot or template '${r.name}' not found in pool '${r.pool}'`);
}

/** The name the layer goes by in its pool, as the server exports it: `VOL`, `VOL@SNAP`, `TMPL`. */
export function layerExportName(e: ExportedLayer): string {
  return e.kind === 'volume' ? e.volume : e.kind === 'snapshot' ? `${e.volume}@${e.snapshot}` : e.template;
}

/** The fields of an export's JSON that say what was read. */
export function exportedFields(e: ExportedLayer): { volume: string } | { volume: string; snapshot: string } | { template: string } {
  return e.kind === 'volume' ? { volume: e.volume } : e.kind === 'snapshot' ? { volume: e.volume, snapshot: e.snapshot } : { template: e.template };
}

/** The names of a pool open in this process. */
export function catalogNames(pool: Pool): PoolNames {
  const c = (): Pool['catalogNow'] => pool.catalogNow;
  return {
    isVolume: async (name) => c().volumes.some((v) => v.name === name),
    isTemplate: async (name) => c().templates.some((t) => t.name === name),
    hasSnapshot: async (volume, snapshot) => c().snapshots.some((s) => s.volume === volume && s.name === snapshot),
  };
}
