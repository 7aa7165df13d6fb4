import type { Command } from 'commander';
import { migrateOnlineCommand } from '../migrate-online.js';
import { interrupt, interruptible } from '../interruptible.js';
import { isNbdUri } from '../../src/migrate/nbd-push-uri.js';
import { migrateToNbd } from '../../src/migrate/nbd-push.js';
import { pushProgressUi } from '../nbd-push-ui.js';
import { globals } from '../output.js';
import { parseSize } from '../size.js';
import type { CommandGroup } from './index.js';

interface MigrateOptions {
  online?: boolean;
  keepSource?: boolean;
  rate?: string;
}

export const migrateCommands: CommandGroup = (program) => {
  program
    .command('migrate <pool/vol> <target>')
    .description('move a volume to another pool (POOL2 or POOL2/NEW) of this home, or push it into an NBD export (nbd://HOST:PORT/EXPORT, the source kept); --online while clients use it')
    .option('--online', 'the volume is served and in use: mirror its writes while copying, then move its export onto the copy')
    .option('--keep-source', 'keep the source volume (cold migration)')
    .option('--rate <rate>', 'most bytes per second of copying (e.g. 100M)')
    .action((ref: string, target: string, opts: MigrateOptions, cmd: Command) => interruptible(() => migrate(ref, target, opts, cmd)));
};

async function migrate(ref: string, target: string, opts: MigrateOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const rate = opts.rate === undefined ? undefined : parseSize(opts.rate);
  if (isNbdUri(target)) return migrateToNbd(g.home, ref, target, { online: opts.online === true, ...(rate !== undefined ? { rate } : {}), json: g.json, signal: interrupt.signal }, pushProgressUi(ref));
  if (opts.online && (await migrateOnlineCommand(g, ref, target, rate))) return;
  throw new Error('a migration without --online is not built yet');
}
