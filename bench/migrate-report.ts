import { formatSize } from '../bin/size.js';
import type { ColdReport, ColdTool } from './migrate-cold.js';
import type { HotReport, HotSample, HotServer } from './migrate-hot.js';
import { markdownTable, median } from './stats.js';

/** Everything one run of bench/migrate.ts measured, as the JSON file holds it. */
export interface MigrateReport {
  date: string;
  host: { cpus: number; load: number[] };
  options: Record<string, unknown>;
  cold?: ColdReport;
  hot?: HotReport;
}

export function markdownReport(r: MigrateReport): string {
  const out: string[] = [`${r.host.cpus} CPUs, load ${r.host.load.map((l) => l.toFixed(1)).join(' ')} when the run ended; ${r.date}`];
  if (r.cold) out.push('', coldTable(r.cold));
  if (r.hot) out.push('', hotTable(r.hot));
  return out.join('\n');
}

function coldTable(c: ColdReport): string {
  const rounds = new Set(c.samples.map((s) => s.round)).size;
  const of = (tool: ColdTool) => c.samples.filter((s) => s.tool === tool);
  const strataMb = median(of('strata migrate').map((s) => s.mbPerSec));
  const qemuMb = median(of('qemu-img convert').map((s) => s.mbPerSec));
  const row = (tool: ColdTool, mb: number, note: string) => {
    const xs = of(tool);
    return [tool, xs.length ? secs(median(xs.map((s) => s.seconds))) : '', xs.length ? mb.toFixed(0) : '', xs.length && Number.isFinite(qemuMb) ? `${(mb / qemuMb).toFixed(2)}×` : '', note];
  };
  return [
    `**Cold migration** of a ${formatSize(c.size)} volume holding ${formatSize(c.dataBytes)} of random data in 1M extents (the rest holes), between two file pools of one home; ` +
      `median of ${rounds} round${rounds === 1 ? '' : 's'}; MB/s = data bytes / wall time`,
    '',
    markdownTable(
      ['tool', 'seconds', 'MB/s', 'vs qemu-img', 'what it does'],
      [
        row('strata migrate', strataMb, c.skipped ?? `whole chain, every cluster's checksum verified, source removed after the target is durable${c.sameData === undefined ? '' : c.sameData ? '; qemu-img compare: same' : '; qemu-img compare: DIFFERENT'}`),
        row('qemu-img convert', qemuMb, '`-n --target-is-zero`, export to export of the same pools (`strata serve` of each), the volume only, source kept'),
      ],
    ),
  ].join('\n');
}

function hotTable(h: HotReport): string {
  const rounds = new Set(h.samples.map((s) => s.round)).size;
  const jobs = [...new Set(h.samples.map((s) => s.job))];
  const rows: string[][] = [];
  for (const job of jobs) {
    for (const server of ['strata', 'qemu'] as HotServer[]) {
      const xs = h.samples.filter((s) => s.job === job && s.server === server);
      if (xs.length === 0) {
        if (server === 'strata' && h.skipped) rows.push([job, label(server), '', '', '', '', '', '', '', h.skipped]);
        continue;
      }
      const m = (f: (s: HotSample) => number) => median(xs.map(f));
      const errors = xs.reduce((n, s) => n + s.fioIoErrors + (s.fioError ? 1 : 0), 0);
      rows.push([
        job,
        label(server),
        kiops(m((s) => s.before.iops)),
        kiops(m((s) => s.during.iops)),
        kiops(m((s) => s.after.iops)),
        m((s) => s.during.p999Ms).toFixed(2),
        Math.max(...xs.map((s) => s.during.maxMs)).toFixed(1),
        secs(m((s) => s.migrationSec)),
        m((s) => s.mbPerSec).toFixed(0),
        `${errors} I/O errors${xs.some((s) => s.outlastedFio) ? '; the migration outlasted fio' : ''}`,
      ]);
    }
  }
  return [
    `**Hot migration under fio** (4K, QD16, through NBD on 127.0.0.1) of a ${formatSize(h.size)} disk holding ${formatSize(h.dataBytes)}, ` +
      `migration started ${h.startSec} s into a ${h.runtimeSec} s run; IOPS are medians of 250 ms windows, latencies are completion latency ` +
      `of the I/Os that completed during the migration (p99.9 median, max the worst of all rounds); median of ${rounds} round${rounds === 1 ? '' : 's'}`,
    '',
    markdownTable(['fio', 'server and migration', 'IOPS before', 'during', 'after', 'p99.9 ms during', 'max ms during', 'migration s', 'MB/s', 'notes'], rows),
  ].join('\n');
}

function label(server: HotServer): string {
  return server === 'strata' ? '`strata serve` + `strata migrate --online`' : 'qemu-storage-daemon + `blockdev-mirror` write-blocking';
}

function kiops(v: number): string {
  return Number.isFinite(v) ? `${(v / 1000).toFixed(1)}k` : '';
}

function secs(v: number): string {
  return Number.isFinite(v) ? v.toFixed(2) : '';
}
