/**
 * The image benchmark (`npm run bench:images`, options: --help): import and
 * export throughput per format (raw, qcow2, VMDK streamOptimized and
 * monolithicSparse, dynamic VHD) of `strata import`/`strata export` against
 * `qemu-img convert` to and from a Strata export. Markdown on stdout, every
 * sample in a JSON file.
 */
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parseSize } from '../bin/size.js';
import { BENCH_RUN_FLAGS, benchMain, benchRunUsage, inBenchDir, optionReaders, type BenchRunOptions } from './bench-main.js';
import { imagesMarkdown, type ImagesRun } from './images-report.js';
import { CASES, runImagesBench, type ImageCase } from './images-run.js';
import { writeDataImage } from './migrate-data.js';

export interface ImagesOptions extends BenchRunOptions {
  quick: boolean;
  size: number;
  data: number;
  cases: ImageCase[];
  rounds: number;
  seed: number;
}

const USAGE = `usage: npm run bench:images -- [options]      (node dist/bench/images.js)
  --quick              a smaller disk and 1 round: about 2 minutes
  --size SIZE          the disk (default 1G; quick 256M)
  --data SIZE          random data in it, in 1M extents at random places (default 512M; quick 128M)
  --formats A,B        of: ${CASES.map((c) => c.name.replace(' ', ':')).join(', ')} (default all)
  --rounds N           rounds, alternating which tool goes first; medians (default 3; quick 1)
  --seed N             the data layout's seed (default 1)
${benchRunUsage('images', 20)}`;

export function parseImagesArgs(argv: string[]): ImagesOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      size: { type: 'string' },
      data: { type: 'string' },
      formats: { type: 'string' },
      rounds: { type: 'string' },
      seed: { type: 'string', default: '1' },
      ...BENCH_RUN_FLAGS,
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const quick = values.quick;
  const { whole, size } = optionReaders(quick, parseSize);
  const cases =
    values.formats === undefined
      ? CASES
      : values.formats.split(',').map((f) => {
          const hit = CASES.find((c) => c.name.replace(' ', ':') === f.trim());
          if (!hit) throw new Error(`unknown format '${f}' (formats: ${CASES.map((c) => c.name.replace(' ', ':')).join(', ')})`);
          return hit;
        });
  const o: ImagesOptions = {
    quick,
    size: size(values.size, '1G', '256M'),
    data: size(values.data, '512M', '128M'),
    cases,
    rounds: whole('rounds', values.rounds, 3, 1),
    seed: whole('seed', values.seed, 1, 1, 0),
    dir: values.dir,
    out: values.out ?? path.join('.scratch', 'bench', `images-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
    json: values.json,
    keep: values.keep,
  };
  const MiB = 1 << 20;
  if (o.size % MiB !== 0 || o.size < 16 * MiB) throw new Error('--size must be a whole number of MiB, at least 16M');
  if (o.data < MiB || o.data > o.size) throw new Error(`--data must be from 1M to the disk's size (${o.size} bytes)`);
  return o;
}

export async function runImages(o: ImagesOptions, log: (line: string) => void): Promise<ImagesRun> {
  const report = await inBenchDir(o, 'images', log, async (dir) => {
    const image = writeDataImage(path.join(dir, 'source.raw'), o.size, o.data, o.seed);
    return runImagesBench(dir, image, o.cases, o.rounds, log);
  });
  return { date: new Date().toISOString(), host: { cpus: os.cpus().length, load: os.loadavg() }, options: { ...o, cases: o.cases.map((c) => c.name) }, images: report };
}

export function main(argv: string[]): Promise<number> {
  return benchMain({ name: 'bench:images', usage: USAGE, parse: parseImagesArgs, run: runImages, markdown: imagesMarkdown }, argv);
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = await main(process.argv.slice(2));
