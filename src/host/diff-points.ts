import { isValidName, NAME_RULE, type Pool } from '../qcowlike/index.js';
import { listSnapshots, type SnapshotInfo } from '../snapshot/index.js';
import { AdminError, aboutVolume } from './admin.js';
import { checkName } from './registry.js';

/**
 * The points of a volume's history that diff, export-diff and import-diff
 * name: `POOL/VOL@SNAP` on the command line, a snapshot name in requests.
 */

export function snapshotsOf(pool: Pool, poolName: string, volume: string): Promise<SnapshotInfo[]> {
  return aboutVolume(poolName, volume, () => listSnapshots(pool, volume));
}

export async function findSnapshot(pool: Pool, poolName: string, volume: string, name: string): Promise<SnapshotInfo> {
  const found = (await snapshotsOf(pool, poolName, volume)).find((s) => s.name === name);
  if (!found) throw new AdminError('ENOENT', `snapshot '${poolName}/${volume}@${name}' not found`);
  return found;
}

export function checkSnapshotName(name: string): string {
  if (!isValidName(name)) throw new Error(`invalid snapshot name '${name}' (${NAME_RULE})`);
  return name;
}

/** `POOL/VOL@SNAP`, or with `snapshot: null` when `bare` allows `POOL/VOL`. */
export function parseSnapshotRef(ref: string, bare = false): { pool: string; volume: string; snapshot: string | null } {
  const at = ref.indexOf('@');
  const vol = at < 0 ? ref : ref.slice(0, at);
  const parts = vol.split('/');
  if (parts.length !== 2) throw new Error(`invalid snapshot '${ref}' (expected POOL/VOL@SNAP, e.g. pool0/vm1@monday)`);
  const pool = checkName('pool', parts[0]!);
  const volume = checkName('volume', parts[1]!);
  if (at < 0) {
    if (!bare) throw new Error(`'${ref}' names a volume; this command takes a snapshot (POOL/VOL@SNAP)`);
    return { pool, volume, snapshot: null };
  }
  return { pool, volume, snapshot: checkSnapshotName(ref.slice(at + 1)) };
}

/**
 * A second point of the same volume: `@SNAP`, `SNAP`, or `POOL/VOL@SNAP`
 * naming the same volume (a diff is between two points of one history).
 */
export function parseOtherPoint(text: string, base: { pool: string; volume: string }): string {
  if (text.includes('/')) {
    const r = parseSnapshotRef(text);
    if (r.pool !== base.pool || r.volume !== base.volume) throw new Error(`'${text}' is not a snapshot of ${base.pool}/${base.volume}: a diff is between two points of one volume`);
    return r.snapshot!;
  }
  return checkSnapshotName(text.startsWith('@') ? text.slice(1) : text);
}
