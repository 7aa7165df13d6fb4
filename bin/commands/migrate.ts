import type { Command } from 'commander';
import { jobsFor } from '../../src/host/jobs.js';
import { checkName, parseVolumeRef } from '../../src/host/registry.js';
import { coldMigrate } from '../../src/migrate/cold.js';
import { globals, report, ProgressBar } from '../output.js';
import { formatSize } from '../size.js';
import { interrupt, interruptible } from '../interruptible.js';
import { migrateOnlineCommand } from '../migrate-online.js';
import { rateOption } from './snapshot.js';
import { isNbdUri } from '../../src/migrate/nbd-push-uri.js';
import { migrateToNbd } from '../../src/migrate/nbd-push.js';
import { pushProgressUi } from '../nbd-push-ui.js';
import type { CommandGroup } from './index.js';

export const migrateCommands: CommandGroup = (program) => {
  program
    .command('migrate <pool/vol> <target>')
    .description('move a volume with its snapshot chain to another pool of this home (TARGET: POOL2 or POOL2/NEW), or push it into an NBD export (nbd://HOST:PORT/EXPORT)')
    .option('--online', 'move a served volume while its clients keep doing I/O')
    .option('--keep-source', 'copy, and keep the source volume and its snapshots')
    .option('--rate <size>', 'most bytes per second (e.g. 100M); unlimited by default')
    .action((ref: string, target: string, opts: MigrateOptions, cmd: Command) => interruptible(() => migrateCommand(ref, target, opts, cmd)));
};

interface MigrateOptions {
  online?: boolean;
  keepSource?: boolean;
  rate?: string;
}

async function migrateCommand(ref: string, target: string, opts: MigrateOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const src = parseVolumeRef(ref);
  const rate = rateOption(opts.rate);
  if (isNbdUri(target)) return migrateToNbd(g.home, ref, target, { online: opts.online === true, ...(rate !== undefined ? { rate } : {}), json: g.json, signal: interrupt.signal }, pushProgressUi(ref));
  const dst = parseTarget(target, src.volume);
  // Nobody can be using a volume whose pool is not served: it moves as a cold migration does.
  if (opts.online === true) {
    if (opts.keepSource === true) throw new Error('--online moves the volume (its export goes with it): --keep-source copies, and needs the volume idle');
    if (await migrateOnlineCommand(g, ref, dst, rate)) return;
  }
  const spec = { kind: 'migrate' as const, target: `${ref} to ${dst.pool}/${dst.volume}`, restart: `strata migrate ${ref} ${target}${opts.keepSource ? ' --keep-source' : ''} (a cut-short migration left the source as it was)`, signal: interrupt.signal, ...(rate !== undefined ? { rate } : {}) };
  let bar: ProgressBar | undefined;
  const result = await jobsFor(g.home, src.pool).run(spec, (job) =>
    coldMigrate(g.home, src, dst, { keepSource: opts.keepSource === true, ...(rate !== undefined ? { rate } : {}) }, {
      signal: job.signal,
      progress: (done, total) => {
        job.progress(done, total);
        if (total !== undefined && total > 0) (bar ??= new ProgressBar(`migrate ${ref}`, total)).update(done);
      },
    }),
  );
  bar?.finish();
  const snaps = result.snapshots.length > 0 ? ` with ${result.snapshots.map((s) => `@${s}`).join(' ')}` : '';
  const origin = result.origin ? `, a clone of template ${result.origin.template}${result.origin.reused ? ' (in the pool already)' : ' (copied)'}` : '';
  report(g, result, `${result.sourceKept ? 'copied' : 'moved'} ${result.source} to ${result.target}${snaps}${origin}: ${formatSize(result.dataBytes)} of data, verified (SHA-256 ${result.verified.head.slice(0, 16)}…)${result.sourceKept ? '; the source is kept' : ''}`);
}

/** `POOL2` (the same volume name) or `POOL2/NEW`. */
function parseTarget(text: string, volume: string): { pool: string; volume: string } {
  if (!text.includes('/')) return { pool: checkName('pool', text), volume };
  return parseVolumeRef(text);
}
