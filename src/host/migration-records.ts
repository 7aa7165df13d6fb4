import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { removeDurably, writeJsonDurably } from './durable-json.js';
import { processAlive, processStart } from './process-liveness.js';

/**
 * Where a hot migration stands, kept in HOME/migrations/ID.json (one file
 * per migration, so that two processes never rewrite each other's):
 *
 * - `copying`: the target is being filled; the source is the volume.
 * - `pivot`: the target's completion is being committed; whichever way
 *   that went is read from the target pool (complete or not).
 * - `pivoted`: the target is the volume; the source is left to remove.
 * - `aborted`: the migration gave up after `pivot`; the source is the
 *   volume even if the target's commit landed.
 *
 * A record whose process died is finished by the next read-write open of
 * either pool (settleMigrations): rolled back before the pivot (the target
 * removed), rolled forward after it (the source removed), so the volume is
 * whole in exactly one place.
 */
export type MigrationPhase = 'copying' | 'pivot' | 'pivoted' | 'aborted';

export interface MigrationRecord {
  id: string;
  source: { pool: string; volume: string };
  target: { pool: string; volume: string };
  phase: MigrationPhase;
  /** The target volume is being made by the migration (before this, a volume of that name is someone else's). */
  targetMade?: boolean;
  /** The snapshot the volume's history was sent up to (a volume with snapshots or an origin): dropped from the source if the migration is undone. */
  temporary?: string;
  startedAt: string;
  pid: number;
  pidStart?: string;
}

export class MigrationRecords {
  readonly dir: string;

  constructor(readonly home: string) {
    this.dir = path.join(path.resolve(home), 'migrations');
  }

  create(source: MigrationRecord['source'], target: MigrationRecord['target']): MigrationRecord {
    const start = processStart(process.pid);
    const rec: MigrationRecord = { id: crypto.randomUUID(), source, target, phase: 'copying', startedAt: new Date().toISOString(), pid: process.pid, ...(start !== undefined ? { pidStart: start } : {}) };
    this.write(rec);
    return rec;
  }

  setPhase(rec: MigrationRecord, phase: MigrationPhase): void {
    rec.phase = phase;
    this.write(rec);
  }

  setTemporary(rec: MigrationRecord, snapshot: string): void {
    rec.temporary = snapshot;
    this.write(rec);
  }

  setTargetMade(rec: MigrationRecord): void {
    rec.targetMade = true;
    this.write(rec);
  }

  remove(rec: MigrationRecord): void {
    removeDurably(this.file(rec.id));
  }

  /** Every record, those of live processes included; one that cannot be read is reported by its file name. */
  list(): MigrationRecord[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir).filter((n) => n.endsWith('.json'));
    } catch {
      return [];
    }
    const out: MigrationRecord[] = [];
    for (const n of names) {
      const file = path.join(this.dir, n);
      try {
        out.push(JSON.parse(fs.readFileSync(file, 'utf8')) as MigrationRecord);
      } catch (err) {
        throw new Error(`${file} is damaged (${(err as Error).message}): a migration's state is unknown; look at both pools, then remove the file`);
      }
    }
    return out;
  }

  /** Records left by processes that died, involving `pool`. */
  orphans(pool: string): MigrationRecord[] {
    return this.list().filter((r) => (r.source.pool === pool || r.target.pool === pool) && !processAlive(r.pid, r.pidStart));
  }

  /** A live migration of this volume (from it or into it), if one runs. */
  busy(pool: string, volume: string): MigrationRecord | undefined {
    return this.list().find((r) => ((r.source.pool === pool && r.source.volume === volume) || (r.target.pool === pool && r.target.volume === volume)) && processAlive(r.pid, r.pidStart));
  }

  private file(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  private write(rec: MigrationRecord): void {
    writeJsonDurably(this.file(rec.id), rec);
  }
}
