import type { Command } from 'commander';
import { volumeRuns, type RunType } from '../../src/host/volume-runs.js';
import { adminOnPool } from '../../src/host/admin-client.js';
import { globals, printJson, printTable } from '../output.js';
import { parseVolumeRef } from '../../src/host/registry.js';
import { formatSize } from '../size.js';
import type { CommandGroup } from './index.js';

export { volumeRuns };

export const mapCommands: CommandGroup = (program) => {
  program
    .command('map <pool/vol>')
    .description('show which ranges of a volume hold data, read as zeroes, or are holes (like qemu-img map)')
    .action(mapVolume);
};

async function mapVolume(ref: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume: name } = parseVolumeRef(ref);
  const runs = await adminOnPool(g.home, poolName, { op: 'map', volume: name }, { readOnly: true });
  if (g.json) return printJson(runs);
  printTable(runs, [
    { header: 'OFFSET', value: (r) => String(r.offset), align: 'right' },
    { header: 'LENGTH', value: (r) => String(r.length), align: 'right' },
    { header: 'TYPE', value: (r) => r.type },
    { header: 'SIZE', value: (r) => formatSize(r.length), align: 'right' },
  ]);
  const total = (t: RunType): string => formatSize(runs.filter((r) => r.type === t).reduce((n, r) => n + r.length, 0));
  process.stdout.write(`${ref}: data ${total('data')}, zero ${total('zero')}, hole ${total('hole')}\n`);
}
