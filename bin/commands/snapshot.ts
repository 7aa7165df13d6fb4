import type { Command } from 'commander';
import { adminOnPool } from '../../src/host/admin-client.js';
import { checkName, parseVolumeRef } from '../../src/host/registry.js';
import { onePool, parseSnapshotRef } from '../../src/host/snapshot-ref.js';
import { formatChainTree } from '../chain-tree.js';
import { withInterrupt } from '../interrupt-signal.js';
import { globals, printJson, report } from '../output.js';
import { formatSize, parseSize } from '../size.js';
import type { CommandGroup } from './index.js';

/**
 * `strata snapshot create|list|delete|revert`: frozen points in a volume's
 * history. Each runs the verb of src/host/chain-admin.ts, in-process or on
 * the server that holds the pool; delete (a merge) runs as a job.
 */
export const snapshotCommands: CommandGroup = (program) => {
  const snapshot = program.command('snapshot').description('take, list, delete and revert to snapshots of volumes');

  snapshot
    .command('create')
    .description('freeze volumes as they are now; several POOL/VOL@SNAP are taken in one atomic step (a crash-consistent group)')
    .argument('<pool/vol@snap...>', 'the snapshots to take, all in one pool')
    .option('--full', 'then give the volume its own copy of every block, so it and the snapshot share no data (a job; one volume only)')
    .action(createSnapshot);
  snapshot.command('list').description("the chain a volume belongs to, as a tree: each layer's creation time and the bytes only it holds").argument('<pool/vol>', 'the volume').action(listSnapshots);
  snapshot
    .command('delete')
    .description('delete a snapshot, merging what later layers still need (a job: strata job list shows its progress)')
    .argument('<pool/vol@snap>', 'the snapshot')
    .option('--rate <size>', 'most bytes merged per second (e.g. 50M); unlimited by default')
    .option('--force', "end the connections reading the snapshot's export first")
    .action(deleteSnapshot);
  snapshot
    .command('revert')
    .description('roll the volume back to a snapshot; later snapshots stay')
    .argument('<pool/vol@snap>', 'the snapshot')
    .option('--force', 'on a served pool, end the connections using the volume first (their clients get an error)')
    .action(revertSnapshot);
};

async function createSnapshot(refs: string[], opts: { full?: boolean }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const parsed = refs.map(parseSnapshotRef);
  const poolName = onePool(parsed, 'the snapshots of a group');
  const full = opts.full === true;
  if (full && parsed.length > 1) throw new Error('--full takes one POOL/VOL@SNAP (a group snapshot shares its blocks)');
  const req = { op: 'snapshot-create' as const, refs: parsed.map((r) => ({ volume: r.volume, snapshot: r.snapshot })), full };
  const made = await withInterrupt((signal) => adminOnPool(g.home, poolName, req, { readOnly: false }, signal));
  const names = refs.join(', ');
  const human = full ? `created snapshot ${names}; ${poolName}/${parsed[0]!.volume} now holds its own copy of every block (full)` : `created snapshot${refs.length > 1 ? `s ${names} (one atomic group)` : ` ${names}`}`;
  report(g, { pool: poolName, full, snapshots: made }, human);
}

async function listSnapshots(ref: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume } = parseVolumeRef(ref);
  const r = await adminOnPool(g.home, checkName('pool', poolName), { op: 'snapshot-list', volume }, { readOnly: true });
  if (g.json) return printJson({ pool: poolName, volume: r.volume, tree: r.tree });
  process.stdout.write(formatChainTree(r.tree));
}

async function deleteSnapshot(ref: string, opts: { rate?: string; force?: boolean }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const s = parseSnapshotRef(ref);
  const rate = rateOption(opts.rate);
  const req = { op: 'snapshot-delete' as const, volume: s.volume, snapshot: s.snapshot, ...(rate !== undefined ? { rate } : {}), ...(opts.force === true ? { force: true } : {}) };
  const r = await withInterrupt((signal) => adminOnPool(g.home, s.pool, req, { readOnly: false }, signal));
  report(g, { pool: s.pool, ...r }, `deleted snapshot ${ref}: ${formatSize(r.freedBytes)} freed`);
}

async function revertSnapshot(ref: string, opts: { force?: boolean }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const s = parseSnapshotRef(ref);
  const r = await adminOnPool(g.home, s.pool, { op: 'snapshot-revert', volume: s.volume, snapshot: s.snapshot, force: opts.force === true }, { readOnly: false });
  const ended = r.disconnected > 0 ? ` (ended ${r.disconnected} connection${r.disconnected === 1 ? '' : 's'})` : '';
  report(g, { pool: s.pool, ...r }, `reverted ${r.reverted} to ${r.to}${ended}`);
}

/** `--rate SIZE` as bytes per second; absent means unlimited. */
export function rateOption(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const rate = parseSize(text);
  if (rate === 0) throw new Error(`--rate ${text}: a rate limit must be above 0 (leave it out for no limit)`);
  return rate;
}
