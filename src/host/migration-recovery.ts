import type { Pool } from '../qcowlike/index.js';
import { ControlClient } from './control-client.js';
import { MigrationRecords, type MigrationRecord } from './migration-records.js';
import { oneLine } from './pool-errors.js';
import { abandonReceive, dropSnapshot } from '../migrate/chain-ops.js';

export type Settled = 'rolled back' | 'rolled forward' | 'waiting';

/**
 * Finishes what a migration whose process died left, with the pools at
 * hand (either may be missing: the other is opened later and finishes its
 * side then). Before the pivot the target goes; after it the source goes.
 * `targetComplete` is asked when the record stops at the pivot itself and
 * only the source is at hand.
 */
export async function settleMigration(records: MigrationRecords, rec: MigrationRecord, have: { source?: Pool; target?: Pool }, targetComplete?: () => Promise<boolean | undefined>): Promise<Settled> {
  const { source, target } = have;
  if (rec.phase === 'pivot') {
    let complete: boolean | undefined;
    if (target) complete = target.volumeRecords().some((v) => v.name === rec.target.volume && !v.incomplete);
    else complete = await targetComplete?.();
    if (complete === undefined) return 'waiting';
    // Looking at the target may have settled its side already (its own open does): go on from what is recorded now.
    const now = records.list().find((r) => r.id === rec.id);
    if (!now) return complete ? 'rolled forward' : 'rolled back';
    if (now.phase === 'pivot') records.setPhase(rec, complete ? 'pivoted' : 'aborted');
    else rec.phase = now.phase;
  }
  if (rec.phase === 'copying' || rec.phase === 'aborted') {
    // The source first: its temporary snapshot goes once nothing is left to roll back on the target that could need it.
    if (!target) return 'waiting';
    // Ours if the record says the migration made it, or if it is still incomplete (made, and cut short before the record said so).
    if (rec.targetMade || target.volumeRecords().some((v) => v.name === rec.target.volume && v.incomplete)) await dropTarget(target, records.home, rec.target.pool, rec.target.volume);
    if (rec.temporary !== undefined) {
      if (!source) {
        records.setPhase(rec, 'aborted');
        return 'waiting';
      }
      if (source.catalogNow.snapshots.some((s) => s.volume === rec.source.volume && s.name === rec.temporary)) await dropSnapshot(source, rec.source.volume, rec.temporary);
    }
    records.remove(rec);
    return 'rolled back';
  }
  if (!source) return 'waiting';
  if (source.volumeRecords().some((v) => v.name === rec.source.volume)) await source.deleteVolumeChain(rec.source.volume);
  records.remove(rec);
  return 'rolled forward';
}

/** Removes a migration's target volume with its snapshots, and what its receive left noted. */
export async function dropTarget(pool: Pool, home: string, poolName: string, volume: string): Promise<void> {
  await abandonReceive(pool, home, poolName, volume);
  if (pool.volumeRecords().some((v) => v.name === volume)) await pool.deleteVolumeChain(volume);
}

/**
 * At a read-write open of `poolName`: settles every migration that a dead
 * process left involving it, opening the other pool too when nobody holds
 * it (whose own open settles its side), or asking the server that does.
 * Problems are told, never thrown: the pool opens either way, and the next
 * open tries again.
 */
export async function settleMigrationsAtOpen(home: string, poolName: string, pool: Pool, say: (message: string) => void, openOther: (name: string) => Promise<{ pool: Pool; close(): Promise<void> }>): Promise<void> {
  const records = new MigrationRecords(home);
  let orphans: MigrationRecord[];
  try {
    orphans = records.orphans(poolName);
  } catch (err) {
    return say(oneLine(err));
  }
  for (const found of orphans) {
    const what = `migration of ${found.source.pool}/${found.source.volume} to ${found.target.pool}/${found.target.volume}`;
    const isSource = found.source.pool === poolName;
    const otherName = isSource ? found.target.pool : found.source.pool;
    // Opened here only if no server has it (a served pool's socket answers); a pool this process holds already refuses a second open.
    const served = await ControlClient.connect(home, otherName).catch(() => undefined);
    served?.close();
    const other = served ? undefined : await openOther(otherName).catch(() => undefined);
    try {
      const rec = records.list().find((r) => r.id === found.id);
      if (!rec) {
        say(`the ${what}, cut short (${found.phase}), was settled`);
        continue;
      }
      const have = isSource ? { source: pool, ...(other ? { target: other.pool } : {}) } : { target: pool, ...(other ? { source: other.pool } : {}) };
      const done = await settleMigration(records, rec, have, () => askTarget(home, rec));
      if (done !== 'waiting') say(`the ${what}, cut short (${found.phase}), was ${done}: the volume is ${done === 'rolled back' ? `${rec.source.pool}/${rec.source.volume}` : `${rec.target.pool}/${rec.target.volume}`}`);
    } catch (err) {
      say(`the ${what} was cut short and could not be settled yet (${oneLine(err)}); the next open tries again`);
    } finally {
      await other?.close().catch(() => undefined);
    }
  }
}

/** Whether the target volume's completion landed, asked of the server that holds its pool; undefined when nobody can tell now. */
async function askTarget(home: string, rec: MigrationRecord): Promise<boolean | undefined> {
  const client = await ControlClient.connect(home, rec.target.pool).catch(() => undefined);
  if (!client) return undefined;
  try {
    const reply = await client.request({ op: 'volume-list' });
    const vols = reply.result as Array<{ name: string; incomplete: boolean }>;
    return vols.some((v) => v.name === rec.target.volume && !v.incomplete);
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}
