import { formatSize } from '../bin/size.js';
import type { FioJob, FioResult } from './nbd-fio.js';
import { maxOf, medianOf } from './nbd-report.js';
import { markdownTable } from './stats.js';

/** What `npm run bench:rados` writes as JSON, and the markdown made from it. */
export type RadosUnit = 'IOPS' | 'MiB/s';

export interface RadosSample extends FioResult {
  round: number;
  /** `value` in the report's unit: fio's MB/s are turned into MiB/s, as Ceph's tools and fio's own text print them. */
  reported: number;
  /** CPU (user + system) per I/O of the process serving fio's I/O (strata serve, rbd-nbd); NaN where there is none. */
  serverCpuUsPerIo: number;
  /** Of that, its main thread's (Strata's event loop, where the NBD work and every call into librados run; librados's own threads are the rest). */
  serverLoopCpuUsPerIo: number;
  /** fio's own CPU per I/O, its engine's threads included (librbd's, for the rbd engine). */
  fioCpuUsPerIo: number;
  /** The Ceph daemons' CPU per I/O, when the cluster is the benchmark's own (else NaN: others' work would be counted). */
  clusterCpuUsPerIo: number;
  /** Highest VmRSS of the serving process during the run (sampled 5 times a second); NaN where there is none. */
  peakRssBytes: number;
}

export interface RadosJobResult {
  job: string;
  unit: RadosUnit;
  server: string;
  median: number;
  medianLatUs: number;
  medianLatP99Us: number;
  medianServerCpuUsPerIo: number;
  medianServerLoopCpuUsPerIo: number;
  medianFioCpuUsPerIo: number;
  medianClusterCpuUsPerIo: number;
  peakRssBytes: number;
  samples: RadosSample[];
}

export interface RadosServerInfo {
  name: string;
  detail: string;
  /** Why it was not run on this host; absent when it ran. */
  notRun?: string;
  /** VmHWM of the serving process when it stopped: its peak since start, the first write pass included. */
  lifetimePeakRssBytes?: number;
}

export interface RadosReport {
  date: string;
  host: { cpus: number; load: number[] };
  options: { runtimeSec: number; rounds: number; size: number; jobs: string[] };
  cluster: { detail: string; own: boolean };
  /** The server every ratio is taken against. */
  anchor: string;
  servers: RadosServerInfo[];
  results: RadosJobResult[];
}

export function unitOf(job: FioJob): RadosUnit {
  return job.unit === 'IOPS' ? 'IOPS' : 'MiB/s';
}

/** fio's value (IOPS, or 10^6 bytes per second) in the report's unit. */
export function reportedValue(job: FioJob, r: FioResult): number {
  return job.unit === 'IOPS' ? r.value : (r.value * 1e6) / 2 ** 20;
}

/** The medians of one job on one server. */
export function jobResult(job: FioJob, server: string, samples: RadosSample[]): RadosJobResult {
  return {
    job: job.name,
    unit: unitOf(job),
    server,
    median: medianOf(samples.map((s) => s.reported)),
    medianLatUs: medianOf(samples.map((s) => s.latMeanUs)),
    medianLatP99Us: medianOf(samples.map((s) => s.latP99Us)),
    medianServerCpuUsPerIo: medianOf(samples.map((s) => s.serverCpuUsPerIo)),
    medianServerLoopCpuUsPerIo: medianOf(samples.map((s) => s.serverLoopCpuUsPerIo)),
    medianFioCpuUsPerIo: medianOf(samples.map((s) => s.fioCpuUsPerIo)),
    medianClusterCpuUsPerIo: medianOf(samples.map((s) => s.clusterCpuUsPerIo)),
    peakRssBytes: maxOf(samples.map((s) => s.peakRssBytes)),
    samples,
  };
}

/**
 * Markdown: a row per server, a column per job with its median and the ratio
 * to the anchor; then the costs of every job on every server that ran.
 */
export function radosMarkdown(report: RadosReport): string {
  const o = report.options;
  const cell = (job: string, server: string) => report.results.find((r) => r.job === job && r.server === server);
  const ran = report.servers.filter((s) => s.notRun === undefined);
  const head = [
    `fio, ${o.rounds} round(s) × ${o.runtimeSec} s, medians; ${formatSize(o.size)} images, each written whole before the rounds and measured whole; ` +
      `Ceph: ${report.cluster.detail}; ${report.host.cpus} CPUs, load ${report.host.load.map((l) => l.toFixed(1)).join(' ')}`,
    ...report.servers.map((s) => `- ${s.name}: ${s.notRun === undefined ? s.detail : `not run: ${s.notRun}`}`),
  ];
  const header = ['server', ...o.jobs.map((j) => `${j} (${report.results.find((r) => r.job === j)?.unit ?? ''})`)];
  const rows = report.servers.map((s) => {
    if (s.notRun !== undefined) return [s.name, `not run: ${s.notRun}`, ...o.jobs.slice(1).map(() => '')];
    return [
      s.name,
      ...o.jobs.map((j) => {
        const value = cell(j, s.name)?.median ?? NaN;
        const anchor = cell(j, report.anchor)?.median;
        const ratio = s.name === report.anchor || anchor === undefined || !(anchor > 0) ? '' : ` (${(value / anchor).toFixed(2)}×)`;
        return `${fmt(value)}${ratio}`;
      }),
    ];
  });
  const costHeader = ['job', 'server', 'latency mean / p99 µs', 'server CPU µs/IO (main thread)', 'fio CPU µs/IO', 'cluster CPU µs/IO', 'server peak RSS'];
  const costRows = o.jobs.flatMap((j) =>
    ran.flatMap((s) => {
      const r = cell(j, s.name);
      if (!r) return [];
      return [[j, s.name, `${r.medianLatUs.toFixed(0)} / ${r.medianLatP99Us.toFixed(0)}`, serverCpu(r), us(r.medianFioCpuUsPerIo), us(r.medianClusterCpuUsPerIo), mib(r.peakRssBytes)]];
    }),
  );
  return [
    ...head,
    '',
    `Medians, in parentheses the ratio to ${report.anchor}:`,
    '',
    markdownTable(header, rows),
    '',
    'Costs (medians; server = the process between fio and the cluster, fio = fio with its engine, cluster = the Ceph daemons, counted on an own cluster only):',
    '',
    markdownTable(costHeader, costRows),
  ].join('\n');
}

function fmt(v: number): string {
  if (Number.isNaN(v)) return '';
  return v >= 10_000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0);
}

function us(v: number): string {
  return Number.isNaN(v) ? '—' : v.toFixed(1);
}

function serverCpu(r: RadosJobResult): string {
  return Number.isNaN(r.medianServerCpuUsPerIo) ? '—' : `${us(r.medianServerCpuUsPerIo)} (${us(r.medianServerLoopCpuUsPerIo)})`;
}

function mib(bytes: number): string {
  return Number.isNaN(bytes) ? '—' : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}
