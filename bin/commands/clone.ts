import type { Command } from 'commander';
import { adminOnPool } from '../../src/host/admin-client.js';
import type { CloneSource } from '../../src/host/chain-requests.js';
import { parseVolumeRef } from '../../src/host/registry.js';
import { onePool, parseSourceRef } from '../../src/host/snapshot-ref.js';
import { withInterrupt } from '../interrupt-signal.js';
import { globals, report, warn } from '../output.js';
import { formatSize } from '../size.js';
import type { CommandGroup } from './index.js';

/**
 * `strata clone POOL/VOL@SNAP|POOL/TMPL POOL/NEW [--full]`: a new volume
 * from a snapshot or a template, linked (it reads what it has not written
 * from its source, made in milliseconds) or, with --full, an independent
 * copy (a job).
 */
export const cloneCommands: CommandGroup = (program) => {
  program
    .command('clone')
    .description('make a volume from a snapshot or a template: linked (instant, shares the source) or --full (a copy)')
    .argument('<source>', 'POOL/VOL@SNAP or POOL/TEMPLATE')
    .argument('<pool/new>', 'the new volume, in the same pool')
    .option('--full', 'copy every block instead of sharing them (a job: strata job list shows its progress)')
    .action(clone);
};

async function clone(sourceText: string, target: string, opts: { full?: boolean }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const src = parseSourceRef(sourceText);
  const dst = parseVolumeRef(target);
  const poolName = onePool([src, dst], 'a clone and its source');
  const source: CloneSource = 'snapshot' in src ? src.snapshot : { template: src.name };
  const full = opts.full === true;
  const info = await withInterrupt((signal) => adminOnPool(g.home, poolName, { op: 'clone', source, name: dst.volume, full }, { readOnly: false }, signal));
  warn(g, info.warnings);
  report(g, { pool: poolName, ...info }, `cloned ${sourceText} to ${target}: ${formatSize(info.size)}, ${full ? 'a full copy' : 'linked'}`);
}
