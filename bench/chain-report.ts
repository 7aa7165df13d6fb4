import { formatSize } from '../bin/size.js';
import type { CreateResult } from './chain-create.js';
import type { DepthResult } from './chain-depth.js';
import type { OnlineReport } from './chain-online.js';
import { median } from './stats.js';

/** Everything one run of bench/chains.ts measured, as the JSON file holds it. */
export interface ChainsReport {
  date: string;
  host: { cpus: number; load: number[] };
  options: Record<string, unknown>;
  create?: CreateResult[];
  depth?: { size: number; grain: number; rounds: number; runtimeSec: number; results: DepthResult[] };
  online?: OnlineReport & { size: number; rounds: number; runtimeSec: number };
}

/** The depth the issue's target is set for: Strata's top reads at ≥ 0.9× its one-layer figure there. */
const TARGET_DEPTHS = [64, 256];
const TARGET = 0.9;

export function markdownReport(r: ChainsReport): string {
  const out: string[] = [`${r.host.cpus} CPUs, load ${r.host.load.map((l) => l.toFixed(1)).join(' ')} when the run ended; ${r.date}`];
  if (r.create) out.push('', createTable(r.create));
  if (r.depth) out.push('', ...depthTables(r.depth));
  if (r.online) out.push('', ...onlineTables(r.online));
  return out.join('\n');
}

function createTable(rows: CreateResult[]): string {
  return [
    '**Create latency** (in-process, file pool; the first create of a pool also sets the shared-map feature bit; volume info: a volumeInfo of every fifth new clone alone, median)',
    '',
    table(
      ['volume', 'data written', 'operation', 'creates', 'median ms', 'max ms', 'first ms', 'volume info ms'],
      rows.map((c) => [formatSize(c.size), formatSize(c.written), c.op, String(c.count), ms(c.medianMs), ms(c.maxMs), ms(c.firstMs), c.infoMedianMs === undefined ? '' : ms(c.infoMedianMs)]),
    ),
  ].join('\n');
}

function depthTables(d: NonNullable<ChainsReport['depth']>): string[] {
  const depths = [...new Set(d.results.map((x) => x.depth))].sort((a, b) => a - b);
  const at = (depth: number, server: string) => d.results.find((x) => x.depth === depth && x.server === server);
  const shallowest = depths[0];
  const rows = depths.map((depth) => {
    const s = at(depth, 'strata');
    const q = at(depth, 'qemu-nbd');
    const sq = s && q ? median(s.samples.map((x) => x.iops / (q.samples.find((y) => y.round === x.round)?.iops ?? NaN)).filter((v) => Number.isFinite(v))) : NaN;
    return [
      String(depth),
      kiops(s?.medianIops),
      times(s?.ofShallowest),
      kiops(q?.medianIops),
      times(q?.ofShallowest),
      times(sq),
      s ? `${formatSize(s.rssBytes)} / ${formatSize(s.peakRssBytes)}` : '',
      q ? `${formatSize(q.rssBytes)} / ${formatSize(q.peakRssBytes)}` : '',
      s?.sameData === undefined ? 'not checked' : s.sameData ? 'yes' : 'NO',
    ];
  });
  const verdicts = TARGET_DEPTHS.filter((t) => depths.includes(t)).map((t) => {
    const v = at(t, 'strata')?.ofShallowest ?? NaN;
    return `depth ${t}: ${times(v)} (${v >= TARGET ? 'meets' : 'misses'} the ${TARGET}× target)`;
  });
  return [
    `**4K random read QD16 vs chain depth** (fio ioengine=nbd over the whole ${formatSize(d.size)} volume, medians of ${d.rounds} round(s) × ${d.runtimeSec} s; ` +
      `each layer holds a random 1/depth of the volume's ${formatSize(d.grain)} blocks; ratios are medians of each round's own ratio)`,
    '',
    table(
      ['depth', 'strata IOPS', `strata vs depth ${shallowest}`, 'qemu-nbd IOPS', `qemu-nbd vs depth ${shallowest}`, 'strata / qemu-nbd', 'strata RSS / peak', 'qemu-nbd RSS / peak', 'same data'],
      rows,
    ),
    ...(verdicts.length > 0 ? ['', `Strata at ${verdicts.join('; ')}.`] : []),
    '',
    `Chain build time (s): ${depths.map((depth) => `depth ${depth} strata ${at(depth, 'strata')?.buildSec.toFixed(1) ?? '?'} / qcow2 ${at(depth, 'qemu-nbd')?.buildSec.toFixed(1) ?? '?'}`).join('; ')}`,
  ];
}

function onlineTables(o: NonNullable<ChainsReport['online']>): string[] {
  const out: string[] = [];
  const skipped = Object.entries(o.skipped).filter(([, why]) => why !== null);
  if (o.snapshotLoad.length > 0) {
    const row = (snapshots: boolean): string[] => {
      const runs = o.snapshotLoad.filter((x) => x.snapshots === snapshots);
      const cmds = runs.flatMap((x) => x.commandMs);
      return [
        snapshots ? 'snapshot every second' : 'no snapshots',
        kiops(median(runs.map((x) => x.iops))),
        ms(median(runs.map((x) => x.latP999Us / 1000))),
        ms(Math.max(...runs.map((x) => x.latMaxUs / 1000))),
        snapshots ? String(cmds.length) : '',
        snapshots && cmds.length > 0 ? `${ms(median(cmds))} / ${ms(Math.max(...cmds))}` : '',
      ];
    };
    out.push(
      `**Client latency across snapshots** (fio randwrite 4K QD16 on a served ${formatSize(o.size)} volume, ${o.rounds} round(s) × ${o.runtimeSec} s each way; ` +
        '`strata snapshot create` through the control socket)',
      '',
      table(['fio run', 'IOPS (median)', 'p99.9 ms (median)', 'max ms (worst)', 'snapshots', 'command ms median / max'], [row(false), row(true)]),
      '',
      `Command times include the CLI's start-up: \`strata --version\` takes ${ms(o.cliStartMs)} ms here.`,
      '',
    );
  }
  if (o.jobs.length > 0) {
    const ops = [...new Set(o.jobs.map((j) => j.op))];
    out.push(
      `**Merge and flatten on a served pool** (${formatSize(o.size)} volumes; fio randread 4K QD16 on the volume during the command and, for comparison, just before it; medians of ${o.rounds} round(s))`,
      '',
      table(
        ['command', 'seconds', 'MB/s', 'client IOPS during', 'client IOPS without', 'during / without'],
        ops.map((op) => {
          const js = o.jobs.filter((j) => j.op === op);
          const during = median(js.map((j) => j.iopsDuring));
          const without = median(js.map((j) => j.iopsWithout));
          return [
            op === 'snapshot delete'
              ? `snapshot delete (merge into its child; MB/s of virtual space${freedNote(js.map((j) => j.freedBytes ?? NaN))})`
              : 'volume flatten (MB/s of data copied)',
            median(js.map((j) => j.seconds)).toFixed(2),
            median(js.map((j) => j.mbPerSec)).toFixed(0),
            kiops(during),
            kiops(without),
            times(during / without),
          ];
        }),
      ),
      '',
    );
  }
  const label: Record<string, string> = { snapshotLoad: 'latency across snapshots', merge: 'merge', flatten: 'flatten' };
  for (const [part, why] of skipped) out.push(`Not measured (${label[part] ?? part}): ${why}.`);
  return out;
}

function freedNote(freed: number[]): string {
  const known = freed.filter((f) => Number.isFinite(f));
  return known.length > 0 ? `; ${formatSize(median(known))} freed, median` : '';
}

function table(header: string[], rows: string[][]): string {
  return [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

function ms(v: number): string {
  return Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v.toFixed(2)) : '';
}

function kiops(v: number | undefined): string {
  return v !== undefined && Number.isFinite(v) ? `${(v / 1000).toFixed(1)}k` : '';
}

function times(v: number | undefined): string {
  return v !== undefined && Number.isFinite(v) ? `${v.toFixed(2)}×` : '';
}
