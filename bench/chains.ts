/**
 * The chain benchmark (`npm run bench:chains`, options: --help): snapshot
 * and clone create latency, 4K random reads against chain depth for Strata
 * and qemu-nbd over qcow2 backing chains, client latency across snapshots
 * under fio load, and merge / flatten throughput with the client's IOPS
 * during them. Markdown on stdout, every sample in a JSON file.
 */
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { formatSize, parseSize } from '../bin/size.js';
import { BENCH_RUN_FLAGS, benchRunUsage, benchMain, inBenchDir, optionReaders, type BenchRunOptions } from './bench-main.js';
import { defaultCases, runCreateBench } from './chain-create.js';
import { runDepthBench, type DepthOptions } from './chain-depth.js';
import { runOnlineBench } from './chain-online.js';
import { markdownReport, type ChainsReport } from './chain-report.js';

export type Part = 'create' | 'depth' | 'online';
const PARTS: Part[] = ['create', 'depth', 'online'];

/** The depth part's options (but where it works) and the others'. */
export interface ChainsOptions extends Omit<DepthOptions, 'dir'>, BenchRunOptions {
  parts: Part[];
  quick: boolean;
  createCount: number;
  createSizes: [number, number];
  createWritten: number;
  onlineSize: number;
  onlineRounds: number;
  onlineRuntimeSec: number;
  dir: string | undefined;
  out: string;
  json: boolean;
  keep: boolean;
}

const USAGE = `usage: npm run bench:chains -- [options]      (node dist/bench/chains.js)
  --parts A,B            of: create, depth, online (default all)
  --quick                depths 1,16,64, 256M volumes, 1 round of shorter runs: about 2 minutes
 create latency (in-process, file pool):
  --creates N            snapshot and clone creates per volume (default 20; quick 5)
  --create-sizes A,B     the small and the huge volume (default 1G,1T)
  --create-written SIZE  data written before the creates, spread over the volume (default 256M)
 read vs chain depth (strata serve vs qemu-nbd on qcow2 backing chains):
  --size SIZE            the chained volume (default 1G; quick 256M)
  --grain SIZE           unit dealt out to the layers (default 64K, one cluster of both formats; 4K for
                         4 KiB blocks, which costs a 1G depth-256 Strata chain about 9G of copy-up and minutes)
  --depths A,B           chain depths (default 1,16,64,256; quick 1,16,64); ratios are to the first
  --rounds N             rounds, each measuring every depth on both servers; medians (default 3; quick 1)
  --runtime SEC          seconds per fio run (default 8; quick 3)
  --skip-verify          do not compare the two chains' contents with qemu-img compare
 online (a served pool; needs strata snapshot create / snapshot delete / volume flatten):
  --online-size SIZE     each volume (default 1G; quick 256M)
  --online-rounds N      default 2; quick 1
  --online-runtime SEC   seconds per fio run (default 10; quick 4)
 general:
  --seed N               the layout's random seed (default 1)
${benchRunUsage('chains', 22)}`;

export function parseChainsArgs(argv: string[]): ChainsOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      parts: { type: 'string' },
      quick: { type: 'boolean', default: false },
      creates: { type: 'string' },
      'create-sizes': { type: 'string', default: '1G,1T' },
      'create-written': { type: 'string', default: '256M' },
      size: { type: 'string' },
      grain: { type: 'string', default: '64K' },
      depths: { type: 'string' },
      rounds: { type: 'string' },
      runtime: { type: 'string' },
      'skip-verify': { type: 'boolean', default: false },
      'online-size': { type: 'string' },
      'online-rounds': { type: 'string' },
      'online-runtime': { type: 'string' },
      seed: { type: 'string', default: '1' },
      ...BENCH_RUN_FLAGS,
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const quick = values.quick;
  const { whole, size } = optionReaders(quick, parseSize);
  const parts = values.parts
    ? values.parts.split(',').map((p) => {
        const part = PARTS.find((x) => x === p.trim());
        if (!part) throw new Error(`unknown part '${p}' (parts: ${PARTS.join(', ')})`);
        return part;
      })
    : PARTS;
  const grain = parseSize(values.grain);
  if (!Number.isInteger(Math.log2(grain)) || grain < 4096 || grain > 1 << 20) throw new Error(`--grain must be a power of two from 4K to 1M, not '${values.grain}'`);
  const chainSize = size(values.size, '1G', '256M');
  if (chainSize % grain !== 0 || chainSize < 16 * grain) throw new Error(`--size must be a multiple of the grain (${formatSize(grain)}) and at least 16 of them`);
  const depths = (values.depths ?? (quick ? '1,16,64' : '1,16,64,256')).split(',').map((d) => whole('depths', d.trim(), 0, 0));
  const blocks = chainSize / grain;
  for (const d of depths) if (d > blocks || d > 65535) throw new Error(`depth ${d} is more than the ${blocks} blocks of --size (or 65535)`);
  if (new Set(depths).size !== depths.length) throw new Error('--depths names a depth twice');
  const createSizes = values['create-sizes'].split(',').map((s) => parseSize(s.trim()));
  if (createSizes.length !== 2) throw new Error(`--create-sizes takes two sizes, the small and the huge volume (got '${values['create-sizes']}')`);
  return {
    parts,
    quick,
    createCount: whole('creates', values.creates, 20, 5),
    createSizes: [createSizes[0]!, createSizes[1]!],
    createWritten: parseSize(values['create-written']),
    size: chainSize,
    grain,
    depths,
    rounds: whole('rounds', values.rounds, 3, 1),
    runtimeSec: whole('runtime', values.runtime, 8, 3),
    verify: !values['skip-verify'],
    onlineSize: size(values['online-size'], '1G', '256M'),
    onlineRounds: whole('online-rounds', values['online-rounds'], 2, 1),
    onlineRuntimeSec: whole('online-runtime', values['online-runtime'], 10, 4, 3),
    seed: whole('seed', values.seed, 1, 1, 0),
    dir: values.dir,
    out: values.out ?? path.join('.scratch', 'bench', `chains-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
    json: values.json,
    keep: values.keep,
  };
}

export async function runChainsBench(o: ChainsOptions, log: (line: string) => void): Promise<ChainsReport> {
  const report: ChainsReport = {
    date: '',
    host: { cpus: os.cpus().length, load: [] },
    options: { ...o },
  };
  await inBenchDir(o, 'chains', log, async (dir) => {
    report.options.dir = dir;
    if (o.parts.includes('create')) {
      report.create = await runCreateBench(dir, defaultCases(o.createSizes[0], o.createSizes[1], o.createWritten), o.createCount, log);
    }
    if (o.parts.includes('depth')) {
      const results = await runDepthBench({ dir, size: o.size, grain: o.grain, depths: o.depths, rounds: o.rounds, runtimeSec: o.runtimeSec, verify: o.verify, seed: o.seed }, log);
      report.depth = { size: o.size, grain: o.grain, rounds: o.rounds, runtimeSec: o.runtimeSec, results };
    }
    if (o.parts.includes('online')) {
      const online = await runOnlineBench({ dir, size: o.onlineSize, rounds: o.onlineRounds, runtimeSec: o.onlineRuntimeSec, snapshotEverySec: 1 }, log);
      report.online = { ...online, size: o.onlineSize, rounds: o.onlineRounds, runtimeSec: o.onlineRuntimeSec };
    }
  });
  report.date = new Date().toISOString();
  report.host.load = os.loadavg();
  return report;
}

export function main(argv: string[]): Promise<number> {
  return benchMain({ name: 'bench:chains', usage: USAGE, parse: parseChainsArgs, run: runChainsBench, markdown: markdownReport }, argv);
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = await main(process.argv.slice(2));
