/**
 * The migration benchmark (`npm run bench:migrate`, options: --help): cold
 * migration throughput of `strata migrate` against `qemu-img convert`
 * between the same two pools' exports, and a hot migration under fio
 * (`strata migrate --online` on a served volume) against QEMU's own
 * write-blocking `blockdev-mirror` under qemu-storage-daemon: the client's
 * IOPS before, during and after, its worst latency, the migration's time.
 * Markdown on stdout, every sample in a JSON file.
 */
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parseSize } from '../bin/size.js';
import { BENCH_RUN_FLAGS, benchRunUsage, benchMain, inBenchDir, optionReaders, type BenchRunOptions } from './bench-main.js';
import type { LoadJob } from './fio-clat.js';
import { runColdBench } from './migrate-cold.js';
import { writeDataImage } from './migrate-data.js';
import { runHotBench } from './migrate-hot.js';
import { markdownReport, type MigrateReport } from './migrate-report.js';

export type Part = 'cold' | 'hot';
const PARTS: Part[] = ['cold', 'hot'];
const JOBS: LoadJob[] = ['randwrite', 'randrw'];

export interface MigrateOptions extends BenchRunOptions {
  parts: Part[];
  quick: boolean;
  size: number;
  data: number;
  hotSize: number;
  hotData: number;
  jobs: LoadJob[];
  rounds: number;
  runtimeSec: number;
  startSec: number;
  seed: number;
}

const USAGE = `usage: npm run bench:migrate -- [options]      (node dist/bench/migrate.js)
  --parts A,B          of: cold, hot (default both)
  --quick              smaller disks, randwrite only, 1 round of shorter runs: about 2 minutes
 cold (strata migrate vs qemu-img convert between two file pools' exports):
  --size SIZE          the volume (default 2G; quick 512M)
  --data SIZE          random data in it, in 1M extents at random places (default 1536M; quick 384M)
 hot (fio on the served disk while strata migrate --online / blockdev-mirror runs):
  --hot-size SIZE      the disk (default 512M; quick 256M)
  --hot-data SIZE      data in it before fio starts (default 384M; quick 192M)
  --jobs A,B           fio 4K QD16 jobs, of: randwrite, randrw (default both; quick randwrite)
  --runtime SEC        seconds of each fio run (default 30; quick 12)
  --start SEC          seconds into the run the migration starts (default 4; quick 3); must be < --runtime
 general:
  --rounds N           rounds, alternating which side goes first; medians (default 3; quick 1)
  --seed N             the data layout's seed (default 1)
${benchRunUsage('migrate', 20)}`;

export function parseMigrateArgs(argv: string[]): MigrateOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      parts: { type: 'string' },
      quick: { type: 'boolean', default: false },
      size: { type: 'string' },
      data: { type: 'string' },
      'hot-size': { type: 'string' },
      'hot-data': { type: 'string' },
      jobs: { type: 'string' },
      rounds: { type: 'string' },
      runtime: { type: 'string' },
      start: { type: 'string' },
      seed: { type: 'string', default: '1' },
      ...BENCH_RUN_FLAGS,
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const quick = values.quick;
  const { whole, size } = optionReaders(quick, parseSize);
  const list = <T extends string>(name: string, text: string | undefined, all: readonly T[], fallback: T[]): T[] => {
    if (text === undefined) return fallback;
    const picked = text.split(',').map((p) => {
      const hit = all.find((x) => x === p.trim());
      if (!hit) throw new Error(`unknown ${name} '${p}' (${name}s: ${all.join(', ')})`);
      return hit;
    });
    if (new Set(picked).size !== picked.length) throw new Error(`--${name}s names one twice`);
    return picked;
  };
  const o: MigrateOptions = {
    parts: list('part', values.parts, PARTS, PARTS),
    quick,
    size: size(values.size, '2G', '512M'),
    data: size(values.data, '1536M', '384M'),
    hotSize: size(values['hot-size'], '512M', '256M'),
    hotData: size(values['hot-data'], '384M', '192M'),
    jobs: list('job', values.jobs, JOBS, quick ? ['randwrite'] : JOBS),
    rounds: whole('rounds', values.rounds, 3, 1),
    runtimeSec: whole('runtime', values.runtime, 30, 12),
    startSec: whole('start', values.start, 4, 3, 2),
    seed: whole('seed', values.seed, 1, 1, 0),
    dir: values.dir,
    out: values.out ?? path.join('.scratch', 'bench', `migrate-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
    json: values.json,
    keep: values.keep,
  };
  const MiB = 1 << 20;
  for (const [name, disk, data] of [['size', o.size, o.data], ['hot-size', o.hotSize, o.hotData]] as const) {
    if (disk % MiB !== 0 || disk < 16 * MiB) throw new Error(`--${name} must be a whole number of MiB, at least 16M`);
    if (data < MiB || data > disk) throw new Error(`--${name === 'size' ? 'data' : 'hot-data'} must be from 1M to the disk's size (${disk} bytes)`);
  }
  if (o.startSec >= o.runtimeSec) throw new Error(`--start (${o.startSec}) must be less than --runtime (${o.runtimeSec})`);
  return o;
}

export async function runMigrateBench(o: MigrateOptions, log: (line: string) => void): Promise<MigrateReport> {
  const report: MigrateReport = { date: '', host: { cpus: os.cpus().length, load: [] }, options: { ...o } };
  await inBenchDir(o, 'migrate', log, async (dir) => {
    report.options.dir = dir;
    if (o.parts.includes('cold')) {
      const image = writeDataImage(path.join(dir, 'cold.raw'), o.size, o.data, o.seed);
      report.cold = await runColdBench(dir, image, o.rounds, log);
    }
    if (o.parts.includes('hot')) {
      const image = writeDataImage(path.join(dir, 'hot.raw'), o.hotSize, o.hotData, o.seed + 1);
      report.hot = await runHotBench({ dir, image, jobs: o.jobs, rounds: o.rounds, runtimeSec: o.runtimeSec, startSec: o.startSec }, log);
    }
  });
  report.date = new Date().toISOString();
  report.host.load = os.loadavg();
  return report;
}

export function main(argv: string[]): Promise<number> {
  return benchMain({ name: 'bench:migrate', usage: USAGE, parse: parseMigrateArgs, run: runMigrateBench, markdown: markdownReport }, argv);
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = await main(process.argv.slice(2));
