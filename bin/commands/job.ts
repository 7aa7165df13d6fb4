import type { Command } from 'commander';
import type { JobRecord } from '../../src/host/job-record.js';
import { runJobRequest, type JobRequest } from '../../src/host/job-requests.js';
import { Jobs } from '../../src/host/jobs.js';
import { ControlClient } from '../../src/host/control-client.js';
import { formatFields, globals, printJson, printTable } from '../output.js';
import { checkName, Registry } from '../../src/host/registry.js';
import { formatSize } from '../size.js';
import type { CommandGroup } from './index.js';

/**
 * `strata job list|show|cancel POOL [ID]`: the pool's long work. The list is
 * read from the home (HOME/jobs/POOL.json), served or not; a served pool's
 * server answers instead, with the progress of its running jobs up to the
 * moment, and is the one that can cancel them.
 */
export const jobCommands: CommandGroup = (program) => {
  const job = program.command('job').description('long work on a pool (rebuild, reclaim after a delete, import, export): list, show, cancel');

  job
    .command('list')
    .description("the pool's jobs, oldest first, with their state and progress")
    .argument('<pool>', 'the pool')
    .action(async (pool: string, _o: unknown, cmd: Command) => {
      const jobs = (await ask(cmd, pool, { op: 'job-list' })) as JobRecord[];
      if (globals(cmd).json) return printJson(jobs);
      if (jobs.length === 0) return void process.stdout.write(`no jobs in pool '${pool}'\n`);
      printTable(jobs, [
        { header: 'ID', value: (j) => String(j.id), align: 'right' },
        { header: 'KIND', value: (j) => j.kind },
        { header: 'TARGET', value: (j) => j.target },
        { header: 'STATE', value: (j) => j.state },
        { header: 'PROGRESS', value: progress, align: 'right' },
        { header: 'STARTED', value: (j) => j.startedAt },
        { header: 'NOTE', value: note },
      ]);
    });

  job
    .command('show')
    .description('one job in full: progress, rate, times, the error that ended it, how it resumes')
    .argument('<pool>', 'the pool')
    .argument('<id>', 'the job number', parseId)
    .action(async (pool: string, id: number, _o: unknown, cmd: Command) => {
      const j = (await ask(cmd, pool, { op: 'job-show', id })) as JobRecord;
      if (globals(cmd).json) return printJson(j);
      process.stdout.write(formatJob(j));
    });

  job
    .command('cancel')
    .description('stop a running job (a rebuild stops at a checkpoint and resumes later; an import leaves its volume incomplete)')
    .argument('<pool>', 'the pool')
    .argument('<id>', 'the job number', parseId)
    .action(async (pool: string, id: number, _o: unknown, cmd: Command) => {
      const j = (await ask(cmd, pool, { op: 'job-cancel', id })) as JobRecord;
      if (globals(cmd).json) return printJson({ ...j, cancelling: true });
      process.stdout.write(`cancelling job ${j.id} (${j.kind} ${j.target}); strata job show ${pool} ${j.id} tells when it has stopped\n`);
    });
};

/** A served pool's server answers; otherwise the home's record does (a job running in another command can only be stopped there). */
async function ask(cmd: Command, pool: string, req: JobRequest): Promise<JobRecord[] | JobRecord> {
  const g = globals(cmd);
  new Registry(g.home).get(checkName('pool', pool));
  const client = await ControlClient.connect(g.home, pool);
  if (client) {
    try {
      return (await client.request(req)).result as JobRecord[] | JobRecord;
    } finally {
      client.close();
    }
  }
  return runJobRequest(new Jobs(g.home, pool), req);
}

function parseId(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < 1) throw new Error(`'${text}' is not a job number`);
  return n;
}

function progress(j: JobRecord): string {
  if (j.bytesTotal > 0) return `${((100 * j.bytesDone) / j.bytesTotal).toFixed(1)}%`;
  return j.bytesDone > 0 ? formatSize(j.bytesDone) : '-';
}

function note(j: JobRecord): string {
  if (j.state === 'interrupted') return j.resumes ? j.resumes : j.restart ? `restart with: ${j.restart}` : (j.error ?? '');
  return j.error ?? '';
}

export function formatJob(j: JobRecord): string {
  const fields: [string, string][] = [
    ['job', String(j.id)],
    ['kind', j.kind],
    ['pool', j.pool],
    ['target', j.target],
    ['state', j.state],
    ['progress', j.bytesTotal > 0 ? `${formatSize(j.bytesDone)} of ${formatSize(j.bytesTotal)} (${progress(j)})` : progress(j)],
    ['rate limit', j.rate !== undefined ? `${formatSize(j.rate)}/s` : 'none'],
    ['started', j.startedAt],
    ['ended', j.endedAt ?? '-'],
    ['process', String(j.pid)],
  ];
  if (j.error !== undefined) fields.push(['error', j.error]);
  if (j.state === 'interrupted' && j.resumes !== undefined) fields.push(['resumes', j.resumes]);
  if (j.state === 'interrupted' && j.restart !== undefined) fields.push(['restart with', j.restart]);
  return formatFields(fields);
}
