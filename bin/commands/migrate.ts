import type { Command } from 'commander';
import { isNbdUri } from '../../src/migrate/nbd-push-uri.js';
import { migrateToNbd } from '../../src/migrate/nbd-push.js';
import { withInterrupt } from '../interrupt-signal.js';
import { pushProgressUi } from '../nbd-push-ui.js';
import { globals } from '../output.js';
import type { CommandGroup } from './index.js';
import { rateOption } from './snapshot.js';

/** `strata migrate POOL/VOL nbd://HOST:PORT/EXPORT [--online] [--rate RATE]`: a push into an NBD export. */
export const migrateCommands: CommandGroup = (program) => {
  program
    .command('migrate')
    .description('move a volume: push it into an NBD export (nbd://HOST:PORT/EXPORT), the source kept')
    .argument('<pool/vol>', 'the volume')
    .argument('<destination>', 'nbd://HOST:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH')
    .option('--online', 'the volume is served and in use: mirror its writes to the target until its last client disconnects')
    .option('--rate <size>', 'most bytes of data copied per second (e.g. 50M); unlimited by default')
    .action(migrate);
};

async function migrate(ref: string, destination: string, opts: { online?: boolean; rate?: string }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  if (!isNbdUri(destination)) throw new Error(`'${destination}' is not an NBD URI (nbd://HOST:PORT/EXPORT); migration between pools is not in this build`);
  const rate = rateOption(opts.rate);
  await withInterrupt((signal) => migrateToNbd(g.home, ref, destination, { online: opts.online === true, ...(rate !== undefined ? { rate } : {}), json: g.json, signal }, pushProgressUi(ref)));
}
