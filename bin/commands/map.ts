import type { Command } from 'commander';
import type { Volume } from '../../src/qcowlike/index.js';
import { aboutVolume, withPool } from '../open-pool.js';
import { globals, printJson, printTable } from '../output.js';
import { parseVolumeRef } from '../registry.js';
import { formatSize } from '../size.js';
import type { CommandGroup } from './index.js';

export type RunType = 'data' | 'zero' | 'hole';

/**
 * One run of the volume's map, merged with its equal neighbours. `zero` and
 * `hole` are block status's own flags; `type` is the word for people: a hole
 * is unallocated and reads zeroes, zero is allocated and known to read zeroes,
 * data is anything else (a hole that reads from a lower layer included).
 */
export interface MapRun {
  offset: number;
  length: number;
  type: RunType;
  zero: boolean;
  hole: boolean;
}

/** How much one blockStatus call asks about: big enough to be few calls, small enough to bound one answer. */
const STATUS_SPAN = 1024 ** 3;

export const mapCommands: CommandGroup = (program) => {
  program
    .command('map <pool/vol>')
    .description('show which ranges of a volume hold data, read as zeroes, or are holes (like qemu-img map)')
    .action(mapVolume);
};

/** Walks the whole volume in blockStatus spans and yields its runs, adjacent equal runs merged across span boundaries. */
export async function* volumeRuns(volume: Volume, onProgress?: (done: number) => void): AsyncGenerator<MapRun> {
  let pending: MapRun | undefined;
  let pos = 0;
  while (pos < volume.size) {
    const want = Math.min(STATUS_SPAN, volume.size - pos);
    const extents = await volume.blockStatus(pos, want);
    const start = pos;
    for (const e of extents) {
      // Answers may cover less than asked, never more; clip anything past the span.
      if (e.offset !== pos || e.length <= 0) throw new Error(`${volume.name}: block status answered offset ${e.offset} length ${e.length}, expected offset ${pos}`);
      const length = Math.min(e.length, start + want - pos);
      if (pending && pending.zero === e.zero && pending.hole === e.hole) pending.length += length;
      else {
        if (pending) yield pending;
        pending = { offset: pos, length, type: !e.zero ? 'data' : e.hole ? 'hole' : 'zero', zero: e.zero, hole: e.hole };
      }
      pos += length;
      if (pos === start + want) break;
    }
    if (pos === start) throw new Error(`${volume.name}: block status gave no answer at offset ${pos}`);
    onProgress?.(pos);
  }
  if (pending) yield pending;
}

async function mapVolume(ref: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume: name } = parseVolumeRef(ref);
  const runs = await withPool(g.home, poolName, { readOnly: true }, async ({ pool }) => {
    const volume = await aboutVolume(poolName, name, () => pool.openVolume(name, { readOnly: true }));
    try {
      const all: MapRun[] = [];
      for await (const run of volumeRuns(volume)) all.push(run);
      return all;
    } finally {
      await volume.close();
    }
  });
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
