import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { formatSize, parseSize } from '../bin/size.js';
import { FIO_JOBS, isWrite, prefill, runFio, type FioJob } from './nbd-fio.js';
import type { RunningServer } from './nbd-servers.js';
import { nbdkit, qemuNbd, strata, strataFile, type BenchSetup } from './nbd-setups.js';

/**
 * The NBD benchmark: the same fio jobs (ioengine=nbd) against Strata, qemu-nbd
 * on qcow2 and nbdkit's file plugin, images of one size in one folder, servers
 * alternated within every round, medians over rounds, ratios Strata / other.
 */
export interface NbdBenchOptions {
  runtimeSec: number;
  rounds: number;
  jobs: FioJob[];
  imageSize: number;
  /** fio --size: the region measured, prefilled so reads meet allocated data. */
  ioSize: number;
  setups: BenchSetup[];
  dir: string | undefined;
  out: string;
  keep: boolean;
}

export interface Sample {
  round: number;
  value: number;
  ios: number;
  latMeanUs: number;
  latP99Us: number;
  /** Server process CPU time (user + system) per I/O, in microseconds. */
  serverCpuUsPerIo: number;
}

export interface BenchReport {
  date: string;
  host: { cpus: number; load: number[] };
  options: { runtimeSec: number; rounds: number; imageSize: number; ioSize: number };
  servers: { name: string; detail: string }[];
  results: { job: string; unit: string; server: string; median: number; medianLatUs: number; medianCpuUsPerIo: number; samples: Sample[] }[];
}

const USAGE = `usage: npm run bench -- [options]
  --runtime SEC        seconds per fio run (default 8)
  --rounds N           rounds; each reported value is the median (default 3)
  --jobs A,B           subset of: ${FIO_JOBS.map((j) => j.name).join(', ')}
  --size SIZE          image size (default 2G); fio measures the first half
  --io-size SIZE       fio --size instead of half the image
  --servers A,B        of: strata, strata-file, qemu-nbd, nbdkit (default strata,qemu-nbd,nbdkit);
                       strata serves a pool volume, strata-file a raw file (strata serve --file)
  --dir DIR            where the images go (default a fresh folder under the temp dir)
  --out FILE           JSON results (default .scratch/bench/nbd-<time>.json)
  --keep               keep the images
quick smoke run:  npm run bench -- --runtime 2 --rounds 1 --size 256M`;

export function parseNbdBenchArgs(argv: string[]): NbdBenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      runtime: { type: 'string', default: '8' },
      rounds: { type: 'string', default: '3' },
      jobs: { type: 'string' },
      size: { type: 'string', default: '2G' },
      'io-size': { type: 'string' },
      servers: { type: 'string', default: 'strata,qemu-nbd,nbdkit' },
      dir: { type: 'string' },
      out: { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return 'help';
  const positive = (name: string, text: string) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a whole number ≥ 1, not '${text}'`);
    return n;
  };
  const jobs = values.jobs
    ? values.jobs.split(',').map((name) => {
        const job = FIO_JOBS.find((j) => j.name === name.trim());
        if (!job) throw new Error(`unknown job '${name}' (jobs: ${FIO_JOBS.map((j) => j.name).join(', ')})`);
        return job;
      })
    : FIO_JOBS;
  const imageSize = parseSize(values.size);
  const ioSize = values['io-size'] ? parseSize(values['io-size']) : Math.floor(imageSize / 2);
  if (ioSize > imageSize || ioSize < 1024 * 1024) throw new Error(`--io-size must lie between 1M and the image size (${formatSize(imageSize)})`);
  const setups = values.servers.split(',').map((name) => {
    switch (name.trim()) {
      case 'strata':
        return strata;
      case 'strata-file':
        return strataFile;
      case 'qemu-nbd':
        return qemuNbd;
      case 'nbdkit':
        return nbdkit;
      default:
        throw new Error(`unknown server '${name}' (servers: strata, strata-file, qemu-nbd, nbdkit)`);
    }
  });
  return {
    runtimeSec: positive('runtime', values.runtime),
    rounds: positive('rounds', values.rounds),
    jobs,
    imageSize,
    ioSize,
    setups,
    dir: values.dir,
    out: values.out ?? path.join('.scratch', 'bench', `nbd-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
    keep: values.keep,
  };
}

export async function runNbdBench(opts: NbdBenchOptions, log: (line: string) => void): Promise<BenchReport> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'strata-bench-'));
  fs.mkdirSync(dir, { recursive: true });
  const servers: { setup: BenchSetup; server: RunningServer }[] = [];
  const samples = new Map<string, Sample[]>();
  const key = (job: FioJob, setup: BenchSetup) => `${job.name}\0${setup.name}`;
  try {
    for (const setup of opts.setups) {
      const image = setup.prepare(dir, opts.imageSize);
      const server = await setup.start(image);
      servers.push({ setup, server });
      log(`${setup.name}: ${server.uri} (pid ${server.pid}); prefilling ${formatSize(opts.ioSize)}`);
      await prefill(server.uri, opts.ioSize);
    }
    for (let round = 0; round < opts.rounds; round++) {
      for (const job of opts.jobs) {
        // Rotate who goes first so that no server always meets a warm or a cold machine.
        const order = servers.map((_, i) => servers[(i + round) % servers.length]!);
        for (const { setup, server } of order) {
          if (isWrite(job)) execFileSync('sync');
          const cpuBefore = cpuTicks(server.pid);
          const r = await runFio(server.uri, job, opts.ioSize, opts.runtimeSec);
          const cpuUs = ((cpuTicks(server.pid) - cpuBefore) / clockTicksPerSecond()) * 1e6;
          const sample: Sample = { round, ...r, serverCpuUsPerIo: r.ios > 0 ? cpuUs / r.ios : NaN };
          samples.set(key(job, setup), [...(samples.get(key(job, setup)) ?? []), sample]);
          log(`round ${round + 1}/${opts.rounds} ${job.name} ${setup.name}: ${fmt(r.value)} ${job.unit}, ` +
            `lat ${r.latMeanUs.toFixed(0)} µs, server ${sample.serverCpuUsPerIo.toFixed(1)} µs CPU/IO`);
        }
      }
    }
  } finally {
    for (const { setup, server } of servers) {
      const exit = await server.stop();
      if (exit.code !== 0 && exit.signal !== 'SIGTERM') log(`${setup.name} ended with code ${exit.code}: ${exit.stderr.trim()}`);
    }
    if (!opts.keep && !opts.dir) fs.rmSync(dir, { recursive: true, force: true });
  }
  return {
    date: new Date().toISOString(),
    host: { cpus: os.cpus().length, load: os.loadavg() },
    options: { runtimeSec: opts.runtimeSec, rounds: opts.rounds, imageSize: opts.imageSize, ioSize: opts.ioSize },
    servers: opts.setups.map((s) => ({ name: s.name, detail: s.detail })),
    results: opts.jobs.flatMap((job) =>
      opts.setups.map((setup) => {
        const s = samples.get(key(job, setup)) ?? [];
        return {
          job: job.name,
          unit: job.unit,
          server: setup.name,
          median: median(s.map((x) => x.value)),
          medianLatUs: median(s.map((x) => x.latMeanUs)),
          medianCpuUsPerIo: median(s.map((x) => x.serverCpuUsPerIo)),
          samples: s,
        };
      }),
    ),
  };
}

/** Markdown: medians per job and server, then Strata's ratio to each other server. */
export function markdownTables(report: BenchReport): string {
  const names = report.servers.map((s) => s.name);
  const [first, ...others] = names;
  const hasStrata = first !== undefined && (first === strata.name || first === strataFile.name) && others.length > 0;
  const cell = (job: string, server: string) => report.results.find((r) => r.job === job && r.server === server);
  const jobs = [...new Set(report.results.map((r) => r.job))];
  const header = ['job', 'unit', ...names, ...(hasStrata ? others.map((o) => `${first} / ${o}`) : [])];
  const rows = jobs.map((job) => {
    const unit = cell(job, first!)?.unit ?? '';
    const values = names.map((s) => fmt(cell(job, s)?.median ?? NaN));
    const ratios = hasStrata ? others.map((o) => ratio(cell(job, first!)?.median, cell(job, o)?.median)) : [];
    return [job, unit, ...values, ...ratios];
  });
  const costHeader = ['mean latency µs / server CPU µs per I/O', ...names];
  const costRows = jobs.map((job) => [
    job,
    ...names.map((s) => {
      const c = cell(job, s);
      return c ? `${c.medianLatUs.toFixed(0)} / ${c.medianCpuUsPerIo.toFixed(1)}` : '';
    }),
  ]);
  const o = report.options;
  return [
    `fio ioengine=nbd, ${o.rounds} round(s) × ${o.runtimeSec} s, medians; ${formatSize(o.ioSize)} measured on ${formatSize(o.imageSize)} images; ` +
      `${report.host.cpus} CPUs, load ${report.host.load.map((l) => l.toFixed(1)).join(' ')}`,
    ...report.servers.map((s) => `- ${s.name}: ${s.detail}`),
    '',
    table(header, rows),
    '',
    table(costHeader, costRows),
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  try {
    const opts = parseNbdBenchArgs(argv);
    if (opts === 'help') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    const report = await runNbdBench(opts, (line) => process.stderr.write(`${line}\n`));
    fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
    fs.writeFileSync(opts.out, `${JSON.stringify(report, null, 2)}\n`);
    process.stdout.write(`${markdownTables(report)}\n\nJSON: ${opts.out}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

function table(header: string[], rows: string[][]): string {
  return [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a !== undefined && b !== undefined && b > 0 ? `${(a / b).toFixed(2)}×` : '';
}

function fmt(v: number): string {
  if (Number.isNaN(v)) return '';
  return v >= 10_000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0);
}

/** utime + stime of a process, in clock ticks, from /proc. */
function cpuTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces; fields count from after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

let ticksPerSecond: number | undefined;
function clockTicksPerSecond(): number {
  ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return ticksPerSecond;
}
