import { ControlClient } from '../src/host/control-client.js';
import type { JobRecord } from '../src/host/job-record.js';
import type { OnlineMigrationResult } from '../src/host/online-migration.js';
import { parseVolumeRef } from '../src/host/registry.js';
import { interrupt } from './interruptible.js';
import { ProgressBar, report, type GlobalOptions } from './output.js';
import { formatSize } from './size.js';

/**
 * `strata migrate POOL/VOL POOL2[/NEW] --online` on a served pool: the
 * server that holds the pool runs the migration (it alone can mirror the
 * export its clients use); this command follows its job on stderr, asks
 * the server to cancel it on Ctrl-C, and prints the result. Resolves false
 * when the pool is not served (nobody uses the volume: a cold migration
 * does it).
 */
export async function migrateOnlineCommand(g: GlobalOptions, ref: string, to: { pool: string; volume: string }, rate: number | undefined): Promise<boolean> {
  const { pool, volume } = parseVolumeRef(ref);
  const control = await ControlClient.connect(g.home, pool);
  if (!control) return false;
  const watch = await ControlClient.connect(g.home, pool);
  const label = `migrating ${pool}/${volume} to ${to.pool}/${to.volume}`;
  let bar: ProgressBar | undefined;
  let jobId: number | undefined;
  const poll = setInterval(() => {
    void (async () => {
      const jobs = (await watch?.request({ op: 'job-list' }))?.result as JobRecord[] | undefined;
      const job = jobs?.filter((j) => j.kind === 'migrate' && j.state === 'running' && j.target.startsWith(`${pool}/${volume} to `)).pop();
      if (!job) return;
      jobId = job.id;
      if (job.bytesTotal > 0) (bar ??= new ProgressBar(label, job.bytesTotal)).update(job.bytesDone);
    })().catch(() => undefined);
  }, 500);
  const cancel = (): void => {
    if (jobId !== undefined) void watch?.request({ op: 'job-cancel', id: jobId }).catch(() => undefined);
  };
  interrupt.signal.addEventListener('abort', cancel, { once: true });
  try {
    const reply = await control.request({ op: 'migrate-online', volume, targetPool: to.pool, targetVolume: to.volume, ...(rate !== undefined ? { rate } : {}) });
    const r = reply.result as OnlineMigrationResult;
    bar?.finish();
    const left = r.sourceLeft !== undefined ? `; ${r.source} could not be removed yet (${r.sourceLeft}): the next open of its pool removes it` : `; ${r.source} is gone`;
    report(g, r, `migrated ${r.source} to ${r.target} online: ${formatSize(r.copiedBytes)} copied in ${r.seconds} s, clients held ${r.pivotHeldMs} ms at the pivot${left}`);
    return true;
  } finally {
    clearInterval(poll);
    bar?.finish();
    interrupt.signal.removeEventListener('abort', cancel);
    control.close();
    watch?.close();
  }
}
