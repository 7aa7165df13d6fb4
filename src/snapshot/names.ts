import { PoolError, type Layer, type Pool } from '../qcowlike/index.js';
import type { SnapshotRef } from './types.js';

/** The name a layer goes by: `vol` (a volume's top), `vol@snap`, `tmpl`; undefined for a nameless base. */
export function layerName(pool: Pool, layer: Layer): string | undefined {
  const c = pool.catalogNow;
  const v = c.volumes.find((x) => x.layer === layer.id);
  if (v) return v.name;
  const s = c.snapshots.find((x) => x.layer === layer.id);
  if (s) return `${s.volume}@${s.name}`;
  return c.templates.find((x) => x.layer === layer.id)?.name;
}

export function layerKind(pool: Pool, layer: Layer): 'volume' | 'snapshot' | 'template' | 'base' {
  const c = pool.catalogNow;
  if (c.volumes.some((x) => x.layer === layer.id)) return 'volume';
  if (c.snapshots.some((x) => x.layer === layer.id)) return 'snapshot';
  if (c.templates.some((x) => x.layer === layer.id)) return 'template';
  return 'base';
}

/** Every layer below `layer` in the tree, nearest first. */
export function descendants(pool: Pool, layer: Layer): Layer[] {
  const out: Layer[] = [];
  const todo = pool.childrenOf(layer);
  while (todo.length > 0) {
    const l = todo.shift()!;
    out.push(l);
    todo.push(...pool.childrenOf(l));
  }
  return out;
}

/**
 * Volumes and templates (and their snapshots) that read through `layer` but
 * are not the history of `family` itself: the clones that keep a snapshot
 * or a template from being deleted.
 */
export function dependants(pool: Pool, layer: Layer, family: string | undefined): string[] {
  const names: string[] = [];
  for (const d of descendants(pool, layer)) {
    const name = layerName(pool, d);
    if (name === undefined || name === family || (family !== undefined && name.startsWith(`${family}@`))) continue;
    names.push(name);
  }
  return names;
}

export function volumeRecord(pool: Pool, name: string): Pool['catalogNow']['volumes'][number] {
  const v = pool.catalogNow.volumes.find((x) => x.name === name);
  if (!v) throw new PoolError('ENOENT', `volume '${name}' not found in pool ${pool.dev.name}`);
  return v;
}

export function snapshotRecord(pool: Pool, ref: SnapshotRef): Pool['catalogNow']['snapshots'][number] {
  const s = pool.catalogNow.snapshots.find((x) => x.volume === ref.volume && x.name === ref.snapshot);
  if (!s) throw new PoolError('ENOENT', `snapshot '${ref.volume}@${ref.snapshot}' not found in pool ${pool.dev.name}`);
  return s;
}

export function templateRecord(pool: Pool, name: string): Pool['catalogNow']['templates'][number] {
  const t = pool.catalogNow.templates.find((x) => x.name === name);
  if (!t) throw new PoolError('ENOENT', `template '${name}' not found in pool ${pool.dev.name}`);
  return t;
}

/** Volumes and templates share one namespace (both are exports by that name). */
export function checkNewName(pool: Pool, name: string, isValid: (n: string) => boolean, rule: string): void {
  if (!isValid(name)) throw new PoolError('EINVAL', `invalid name '${name}' (${rule})`);
  const c = pool.catalogNow;
  if (c.volumes.some((v) => v.name === name)) throw new PoolError('EEXIST', `volume '${name}' already exists`);
  if (c.templates.some((t) => t.name === name)) throw new PoolError('EEXIST', `template '${name}' already exists`);
}
