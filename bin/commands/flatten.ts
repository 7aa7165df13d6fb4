import type { Command } from 'commander';
import { adminOnPool } from '../../src/host/admin-client.js';
import { parseVolumeRef } from '../../src/host/registry.js';
import { withInterrupt } from '../interrupt-signal.js';
import { globals, report } from '../output.js';
import { formatSize } from '../size.js';
import { rateOption } from './snapshot.js';

/** `strata volume flatten POOL/VOL [--rate SIZE]`: copies in what a clone reads from below and cuts it loose, as a job. */
export async function flattenVolume(ref: string, opts: { rate?: string }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume } = parseVolumeRef(ref);
  const rate = rateOption(opts.rate);
  const req = { op: 'volume-flatten' as const, volume, ...(rate !== undefined ? { rate } : {}) };
  const info = await withInterrupt((signal) => adminOnPool(g.home, poolName, req, { readOnly: false }, signal));
  report(g, { pool: poolName, ...info }, `flattened ${ref}: ${formatSize(info.allocatedBytes)} now held by the volume itself, nothing read from a snapshot or template`);
}
