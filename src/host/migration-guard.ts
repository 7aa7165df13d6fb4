import { AdminError, type AdminRequest } from './admin.js';
import type { Jobs } from './jobs.js';
import { MigrationRecords } from './migration-records.js';

/** The volumes a request would change (its size, its chain, its existence), for the ones a migration holds still. */
function changedVolumes(req: AdminRequest): string[] {
  switch (req.op) {
    case 'volume-resize':
    case 'volume-delete':
    case 'volume-flatten':
    case 'snapshot-delete':
    case 'snapshot-revert':
    case 'template-create':
      return [req.volume];
    case 'snapshot-create':
      return req.refs.map((r) => r.volume);
    default:
      return [];
  }
}

/**
 * Refuses a change to a volume a live migration is moving (its chain is
 * being sent, its writes mirrored): the migration carries what it found
 * when it started, and its pivot removes the source whole.
 */
export function refuseMigrating(jobs: Jobs, pool: string, req: AdminRequest): void {
  const volumes = changedVolumes(req);
  if (volumes.length === 0) return;
  const records = new MigrationRecords(jobs.home);
  const running = jobs.list().filter((j) => j.kind === 'migrate' && j.state === 'running');
  for (const v of volumes) {
    const m = records.busy(pool, v);
    if (m) throw new AdminError('EBUSY', `volume '${pool}/${v}' is being migrated (${m.source.pool}/${m.source.volume} to ${m.target.pool}/${m.target.volume}); wait for it to finish, or cancel its job`);
    // A cold migration or a push into an NBD export reads it as it was when it started.
    const j = running.find((x) => x.target.startsWith(`${pool}/${v} to `));
    if (j) throw new AdminError('EBUSY', `volume '${pool}/${v}' is being migrated (job ${j.id}: ${j.target}); wait for it to finish, or cancel it`);
  }
}
