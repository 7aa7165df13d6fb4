import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { formatSize } from '../bin/size.js';
import { isWrite, runFio, type FioJob } from './nbd-fio.js';
import { parseNbdBenchArgs, USAGE, type NbdBenchOptions } from './nbd-options.js';
import { markdownTables, maxOf, medianOf, type BenchReport, type Sample } from './nbd-report.js';
import type { RunningServer } from './nbd-servers.js';
import { fillSetup, type BenchSetup } from './nbd-setups.js';
import { clockTicksPerSecond, cpuTicks } from './proc-cpu.js';
import { residentMemory, sampleRss } from './proc-memory.js';

/**
 * The NBD benchmark: the same fio jobs (ioengine=nbd) against every server
 * of the comparisons asked for (Strata on a plain pool, over a snapshot
 * chain, on RAID 5; qemu-nbd on qcow2; nbdkit's file plugin; a bare Node
 * server), images of one size in one folder, servers alternated within
 * every round, medians over rounds.
 */
export async function runNbdBench(opts: NbdBenchOptions, log: (line: string) => void): Promise<BenchReport> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'strata-bench-'));
  fs.mkdirSync(dir, { recursive: true });
  const servers: { setup: BenchSetup; image: string; server: RunningServer; lifetimePeak: number }[] = [];
  const samples = new Map<string, Sample[]>();
  const key = (job: FioJob, setup: BenchSetup) => `${job.name}\0${setup.name}`;
  try {
    for (const setup of opts.setups) {
      const image = setup.prepare(dir, opts.imageSize);
      const server = await setup.start(image);
      servers.push({ setup, image, server, lifetimePeak: NaN });
      log(`${setup.name}: ${server.uri} (pid ${server.pid}); filling ${formatSize(opts.ioSize)}`);
      await fillSetup(setup, image, server, opts.ioSize, log);
    }
    for (let round = 0; round < opts.rounds; round++) {
      for (const job of opts.jobs) {
        // Rotate who goes first so that no server always meets a warm or a cold machine.
        const order = servers.map((_, i) => servers[(i + round) % servers.length]!);
        for (const { setup, server, image } of order) {
          await setup.beforeJob?.(image);
          if (isWrite(job)) execFileSync('sync');
          const cpuBefore = cpuTicks(server.pid);
          const rss = sampleRss(server.pid);
          const r = await runFio(server.uri, job, opts.ioSize, opts.runtimeSec);
          const peakRssBytes = rss.stop();
          const cpuUs = ((cpuTicks(server.pid) - cpuBefore) / clockTicksPerSecond()) * 1e6;
          const sample: Sample = { round, ...r, serverCpuUsPerIo: r.ios > 0 ? cpuUs / r.ios : NaN, peakRssBytes };
          samples.set(key(job, setup), [...(samples.get(key(job, setup)) ?? []), sample]);
          log(
            `round ${round + 1}/${opts.rounds} ${job.name} ${setup.name}: ${fmt(r.value)} ${job.unit}, ` +
              `lat ${r.latMeanUs.toFixed(0)} µs (p99 ${r.latP99Us.toFixed(0)}), server ${sample.serverCpuUsPerIo.toFixed(1)} µs CPU/IO, ` +
              `peak RSS ${(peakRssBytes / 2 ** 20).toFixed(0)} MiB`,
          );
        }
      }
    }
  } finally {
    for (const s of servers) {
      try {
        s.lifetimePeak = residentMemory(s.server.pid).peak;
      } catch {
        // Already gone: its exit is reported below.
      }
      const exit = await s.server.stop();
      if (exit.code !== 0 && exit.signal !== 'SIGTERM') log(`${s.setup.name} ended with code ${exit.code}: ${exit.stderr.trim()}`);
    }
    if (!opts.keep && !opts.dir) fs.rmSync(dir, { recursive: true, force: true });
  }
  return {
    date: new Date().toISOString(),
    host: { cpus: os.cpus().length, load: os.loadavg() },
    options: { runtimeSec: opts.runtimeSec, rounds: opts.rounds, imageSize: opts.imageSize, ioSize: opts.ioSize },
    comparisons: opts.comparisons,
    servers: servers.map(({ setup, lifetimePeak }) => ({
      name: setup.name,
      detail: setup.detail,
      ...(setup.cacheBudget === undefined ? {} : { cacheBudgetBytes: setup.cacheBudget }),
      lifetimePeakRssBytes: lifetimePeak,
    })),
    results: opts.jobs.flatMap((job) =>
      opts.setups.map((setup) => {
        const s = samples.get(key(job, setup)) ?? [];
        return {
          job: job.name,
          unit: job.unit,
          server: setup.name,
          median: medianOf(s.map((x) => x.value)),
          medianLatUs: medianOf(s.map((x) => x.latMeanUs)),
          medianLatP99Us: medianOf(s.map((x) => x.latP99Us)),
          medianCpuUsPerIo: medianOf(s.map((x) => x.serverCpuUsPerIo)),
          peakRssBytes: maxOf(s.map((x) => x.peakRssBytes)),
          samples: s,
        };
      }),
    ),
  };
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

function fmt(v: number): string {
  return v >= 10_000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0);
}
