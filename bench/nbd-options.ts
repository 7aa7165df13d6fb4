import path from 'node:path';
import { parseArgs } from 'node:util';
import { formatSize, parseSize } from '../bin/size.js';
import { FIO_JOBS, type FioJob } from './nbd-fio.js';
import { SETUPS, type BenchSetup } from './nbd-setups.js';

/**
 * The options of `npm run bench`. A comparison is a list of servers whose
 * first is compared with each of the others; every server of every
 * comparison runs in one alternation, so a server shared by two comparisons
 * (qemu-nbd) is measured once.
 */
export interface Comparison {
  name: string;
  servers: string[];
}

export interface NbdBenchOptions {
  runtimeSec: number;
  rounds: number;
  jobs: FioJob[];
  imageSize: number;
  /** fio --size: the region measured, prefilled so reads meet allocated data. */
  ioSize: number;
  comparisons: Comparison[];
  /** Every server of the comparisons, once each, in order of first mention. */
  setups: BenchSetup[];
  dir: string | undefined;
  out: string;
  keep: boolean;
}

/** The comparisons `--suite` names: Strata as it is, over a deep snapshot chain, and on RAID 5, each against qemu-nbd. */
export const SUITES: readonly Comparison[] = [
  { name: 'plain', servers: ['strata', 'qemu-nbd', 'nbdkit'] },
  { name: 'chain', servers: ['strata-chain64', 'qemu-nbd'] },
  { name: 'raid5', servers: ['strata-raid5', 'qemu-nbd'] },
];

const DEFAULT_SERVERS = 'strata,qemu-nbd,nbdkit';

export const USAGE = `usage: npm run bench -- [options]
  --runtime SEC        seconds per fio run (default 8)
  --rounds N           rounds; each reported value is the median (default 3)
  --jobs A,B           subset of: ${FIO_JOBS.map((j) => j.name).join(', ')}
  --size SIZE          image size (default 2G); fio measures the first half
  --io-size SIZE       fio --size instead of half the image
  --suite A,B | all    comparisons to run together: ${SUITES.map((s) => `${s.name} (${s.servers.join(', ')})`).join('; ')}
  --servers A,B        one comparison of your own, the first server against each of the others (default ${DEFAULT_SERVERS}
                       when no --suite is given), of: ${SETUPS.map((s) => s.name).join(', ')};
                       strata serves a pool volume, strata-file a raw file (strata serve --file),
                       strata-chain64 a volume over 64 snapshots, strata-raid5 a volume of a RAID 5 pool
                       over 4 member files, node-bare is the bare Node server of bench/nbd-bare.ts
  --dir DIR            where the images go (default a fresh folder under the temp dir)
  --out FILE           JSON results (default .scratch/bench/nbd-<time>.json)
  --keep               keep the images
quick smoke run:  npm run bench -- --runtime 2 --rounds 1 --size 256M
plain, chain and RAID 5 in one run:  npm run bench -- --suite all`;

export function parseNbdBenchArgs(argv: string[]): NbdBenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      runtime: { type: 'string', default: '8' },
      rounds: { type: 'string', default: '3' },
      jobs: { type: 'string' },
      size: { type: 'string', default: '2G' },
      'io-size': { type: 'string' },
      suite: { type: 'string' },
      servers: { type: 'string' },
      dir: { type: 'string' },
      out: { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const positive = (name: string, text: string) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a whole number ≥ 1, not '${text}'`);
    return n;
  };
  const jobs = values.jobs
    ? list(values.jobs).map((name) => {
        const job = FIO_JOBS.find((j) => j.name === name);
        if (!job) throw new Error(`unknown job '${name}' (jobs: ${FIO_JOBS.map((j) => j.name).join(', ')})`);
        return job;
      })
    : FIO_JOBS;
  const imageSize = parseSize(values.size);
  const ioSize = values['io-size'] ? parseSize(values['io-size']) : Math.floor(imageSize / 2);
  if (ioSize > imageSize || ioSize < 1024 * 1024) throw new Error(`--io-size must lie between 1M and the image size (${formatSize(imageSize)})`);
  const comparisons = [
    ...(values.suite === undefined ? [] : suites(values.suite)),
    ...(values.servers !== undefined || values.suite === undefined ? [{ name: 'servers', servers: servers(values.servers ?? DEFAULT_SERVERS) }] : []),
  ];
  const names = [...new Set(comparisons.flatMap((c) => c.servers))];
  return {
    runtimeSec: positive('runtime', values.runtime),
    rounds: positive('rounds', values.rounds),
    jobs,
    imageSize,
    ioSize,
    comparisons,
    setups: names.map((n) => SETUPS.find((s) => s.name === n)!),
    dir: values.dir,
    out: values.out ?? path.join('.scratch', 'bench', `nbd-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
    keep: values.keep,
  };
}

function list(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function suites(text: string): Comparison[] {
  const names = list(text);
  if (names.length === 1 && names[0] === 'all') return [...SUITES];
  if (names.length === 0) throw new Error(`--suite names none of: ${SUITES.map((s) => s.name).join(', ')}, all`);
  return [...new Set(names)].map((name) => {
    const suite = SUITES.find((s) => s.name === name);
    if (!suite) throw new Error(`unknown suite '${name}' (suites: ${SUITES.map((s) => s.name).join(', ')}, all)`);
    return suite;
  });
}

function servers(text: string): string[] {
  const names = [...new Set(list(text))];
  if (names.length === 0) throw new Error(`--servers names none of: ${SETUPS.map((s) => s.name).join(', ')}`);
  for (const name of names) {
    if (!SETUPS.some((s) => s.name === name)) throw new Error(`unknown server '${name}' (servers: ${SETUPS.map((s) => s.name).join(', ')})`);
  }
  return names;
}
