import { formatSize } from '../bin/size.js';
import type { FioResult } from './nbd-fio.js';
import type { Comparison } from './nbd-options.js';
import { markdownTable } from './stats.js';

/** What `npm run bench` writes as JSON, and the markdown made from it. */
export interface Sample extends FioResult {
  round: number;
  /** Server process CPU time (user + system) per I/O, in microseconds. */
  serverCpuUsPerIo: number;
  /** Highest VmRSS of the server seen during the fio run (sampled 5 times a second), in bytes. */
  peakRssBytes: number;
}

export interface JobResult {
  job: string;
  unit: string;
  server: string;
  median: number;
  medianLatUs: number;
  /** fio's client-side completion latency, 99th percentile. */
  medianLatP99Us: number;
  medianCpuUsPerIo: number;
  /** The highest of the samples' peaks. */
  peakRssBytes: number;
  samples: Sample[];
}

export interface ServerInfo {
  name: string;
  detail: string;
  /** Strata's metadata cache budget (its memory target is this + 100 MiB). */
  cacheBudgetBytes?: number;
  /** VmHWM when the server stopped: its peak since start, chain building and prefill included. */
  lifetimePeakRssBytes: number;
}

export interface BenchReport {
  date: string;
  host: { cpus: number; load: number[] };
  options: { runtimeSec: number; rounds: number; imageSize: number; ioSize: number };
  comparisons: Comparison[];
  servers: ServerInfo[];
  results: JobResult[];
}

/** What Strata's resident memory may exceed its cache budget by. */
export const RSS_ALLOWANCE = 100 * 1024 * 1024;

/** Markdown: per comparison, medians per job and server with the first server's ratio to each other, then the costs. */
export function markdownTables(report: BenchReport): string {
  const o = report.options;
  const head = [
    `fio ioengine=nbd, ${o.rounds} round(s) × ${o.runtimeSec} s, medians; ${formatSize(o.ioSize)} measured on ${formatSize(o.imageSize)} images; ` +
      `${report.host.cpus} CPUs, load ${report.host.load.map((l) => l.toFixed(1)).join(' ')}`,
    ...report.servers.map((s) => `- ${s.name}: ${s.detail}`),
  ];
  const budgets = report.servers.filter((s) => s.cacheBudgetBytes !== undefined);
  if (budgets.length) {
    head.push(
      '',
      `Strata runs with the pool's default metadata cache budget of ${formatSize(budgets[0]!.cacheBudgetBytes!)} (strata serve sets no other); ` +
        `the memory target is a peak RSS within that budget + 100 MiB. Write payloads and replies in flight are bounded apart from it by serve's --max-buffer.`,
      ...budgets.map((s) => memoryLine(report, s)),
    );
  }
  return [...head, ...report.comparisons.map((c) => comparisonTables(report, c))].join('\n');
}

function memoryLine(report: BenchReport, s: ServerInfo): string {
  const peak = maxOf(report.results.filter((r) => r.server === s.name).map((r) => r.peakRssBytes));
  const limit = s.cacheBudgetBytes! + RSS_ALLOWANCE;
  if (Number.isNaN(peak)) return `- ${s.name}: no RSS sample`;
  return `- ${s.name}: highest peak RSS during the jobs ${mib(peak)}, ${peak <= limit ? 'within' : 'over'} budget + 100 MiB = ${mib(limit)}`;
}

function comparisonTables(report: BenchReport, c: Comparison): string {
  const [first, ...others] = c.servers;
  const cell = (job: string, server: string) => report.results.find((r) => r.job === job && r.server === server);
  const jobs = [...new Set(report.results.map((r) => r.job))];
  const header = ['job', 'unit', ...c.servers, ...others.map((o) => `${first} / ${o}`)];
  const rows = jobs.map((job) => {
    const values = c.servers.map((s) => fmt(cell(job, s)?.median ?? NaN));
    const ratios = others.map((o) => ratio(cell(job, first!)?.median, cell(job, o)?.median));
    return [job, cell(job, first!)?.unit ?? '', ...values, ...ratios];
  });
  const costHeader = ['latency mean / p99 µs · server CPU µs per I/O · peak RSS', ...c.servers];
  const costRows = jobs.map((job) => [
    job,
    ...c.servers.map((s) => {
      const r = cell(job, s);
      return r ? `${r.medianLatUs.toFixed(0)} / ${r.medianLatP99Us.toFixed(0)} · ${r.medianCpuUsPerIo.toFixed(1)} · ${mib(r.peakRssBytes)}` : '';
    }),
  ]);
  return ['', `### ${c.name}: ${first} against ${others.join(', ') || 'nothing'}`, '', markdownTable(header, rows), '', markdownTable(costHeader, costRows)].join('\n');
}

/** The median of the numbers that are not NaN (a run that reported no percentile). */
export function medianOf(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The highest of the numbers that are not NaN, or NaN. */
export function maxOf(xs: number[]): number {
  return xs.reduce((m, x) => (Number.isNaN(x) || x <= m ? m : x), NaN);
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a !== undefined && b !== undefined && b > 0 ? `${(a / b).toFixed(2)}×` : '';
}

function fmt(v: number): string {
  if (Number.isNaN(v)) return '';
  return v >= 10_000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0);
}

function mib(bytes: number): string {
  return Number.isNaN(bytes) ? '?' : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}
