import { checkName, parseVolumeRef } from './registry.js';

/**
 * Names of frozen layers as users type them: `POOL/VOL@SNAP` for a snapshot
 * (the form rbd and zfs users know), `POOL/NAME` for a volume or a template
 * (they share one name space in a pool). Each name is checked before it goes
 * anywhere, and an error says which part is wrong.
 */

export interface PoolSnapshotRef {
  pool: string;
  volume: string;
  snapshot: string;
}

/** Splits `POOL/VOL@SNAP`, checking all three names. */
export function parseSnapshotRef(ref: string): PoolSnapshotRef {
  const at = ref.indexOf('@');
  if (at < 0) throw new Error(`'${ref}' names no snapshot (expected POOL/VOL@SNAP, e.g. pool0/vm1@before-upgrade)`);
  if (ref.indexOf('@', at + 1) >= 0) throw new Error(`invalid snapshot '${ref}' (one '@' between the volume and the snapshot name)`);
  const volumePart = ref.slice(0, at);
  const parts = volumePart.split('/');
  if (parts.length !== 2) throw new Error(`invalid snapshot '${ref}' (expected POOL/VOL@SNAP, e.g. pool0/vm1@before-upgrade)`);
  const { pool, volume } = parseVolumeRef(volumePart);
  return { pool, volume, snapshot: checkName('snapshot', ref.slice(at + 1)) };
}

/** What a clone or a template is made from: a snapshot, or a name that the pool resolves (a template, or a volume). */
export type PoolSourceRef = { pool: string; snapshot: { volume: string; snapshot: string } } | { pool: string; name: string };

export function parseSourceRef(ref: string): PoolSourceRef {
  if (ref.includes('@')) {
    const s = parseSnapshotRef(ref);
    return { pool: s.pool, snapshot: { volume: s.volume, snapshot: s.snapshot } };
  }
  const { pool, volume } = parseVolumeRef(ref);
  return { pool, name: volume };
}

/** Splits `POOL/TMPL`, checking both names. */
export function parseTemplateRef(ref: string): { pool: string; template: string } {
  if (ref.includes('@')) throw new Error(`'${ref}' names a snapshot; this command takes POOL/TEMPLATE`);
  const parts = ref.split('/');
  if (parts.length !== 2) throw new Error(`invalid template '${ref}' (expected POOL/TEMPLATE, e.g. pool0/ubuntu-tmpl)`);
  return { pool: checkName('pool', parts[0]!), template: checkName('template', parts[1]!) };
}

/** All refs of one command must be in one pool (a group snapshot is one atomic step inside one pool). */
export function onePool(refs: readonly { pool: string }[], what: string): string {
  const pools = [...new Set(refs.map((r) => r.pool))];
  if (pools.length > 1) throw new Error(`${what} must be in one pool (got ${pools.map((p) => `'${p}'`).join(', ')})`);
  return pools[0]!;
}

export function formatSnapshotRef(pool: string, volume: string, snapshot: string): string {
  return `${pool}/${volume}@${snapshot}`;
}
