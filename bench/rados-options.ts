import path from 'node:path';
import { parseArgs } from 'node:util';
import { formatSize, parseSize } from '../bin/size.js';
import { BENCH_RUN_FLAGS, benchRunUsage, type BenchRunOptions } from './bench-main.js';
import { FIO_JOBS, type FioJob } from './nbd-fio.js';
import { ANCHOR, RADOS_SETUPS, type RadosSetup } from './rados-setups.js';

/** The options of `npm run bench:rados`. */
export interface RadosBenchOptions extends BenchRunOptions {
  runtimeSec: number;
  rounds: number;
  jobs: FioJob[];
  /** Every image's size: written whole before the rounds, and measured whole. */
  size: number;
  setups: RadosSetup[];
  /** A cluster to measure on instead of one of the benchmark's own. */
  cephConf: string | undefined;
  /** OSDs of the cluster the benchmark starts. */
  osds: number;
  id: string;
  strataPool: string;
  rbdPool: string;
}

/** The NBD benchmark's jobs but its depth-1 reads, which a network cluster's round trip alone decides. */
const DEFAULT_JOBS = ['randread-4k-qd16', 'randwrite-4k-qd16', 'read-1m-qd4', 'write-1m-qd4'];
const MIB = 1024 * 1024;

export const USAGE = `usage: npm run bench:rados -- [options]      (node dist/bench/rados.js)
  --runtime SEC        seconds per fio run (default 8)
  --rounds N           rounds, the servers taking turns on each job; each value is the median (default 3)
  --size SIZE          every image's size, written whole before the rounds and measured whole (default 1G)
  --jobs A,B           of: ${FIO_JOBS.map((j) => j.name).join(', ')}
                       (default ${DEFAULT_JOBS.join(', ')})
  --servers A,B        of: ${RADOS_SETUPS.map((s) => s.name).join(', ')} (default all); ratios are to ${ANCHOR};
                       strata serves a volume of a pool on RADOS, strata-raw a bare RADOS device (no pool format),
                       fio-rbd is fio's rbd engine, rbd-nbd the kernel's NBD client on rbd-nbd (where the nbd module is)
  --ceph-conf FILE     measure on this cluster instead of starting one; what the run makes there it removes
  --osds N             OSDs of the cluster it starts otherwise (default 3; 2 replicas from 2 on)
  --id CLIENT          Ceph client name without 'client.' (default admin)
  --strata-pool NAME   Ceph pool of Strata's pool and device (default strata)
  --rbd-pool NAME      Ceph pool of the RBD images (default rbd)
${benchRunUsage('rados', 20)}
                       (a cluster of its own is stopped and removed at the end all the same)
quick run:  npm run bench:rados -- --rounds 1 --runtime 5`;

export function parseRadosBenchArgs(argv: string[]): RadosBenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      runtime: { type: 'string', default: '8' },
      rounds: { type: 'string', default: '3' },
      size: { type: 'string', default: '1G' },
      jobs: { type: 'string' },
      servers: { type: 'string' },
      'ceph-conf': { type: 'string' },
      osds: { type: 'string', default: '3' },
      id: { type: 'string', default: 'admin' },
      'strata-pool': { type: 'string', default: 'strata' },
      'rbd-pool': { type: 'string', default: 'rbd' },
      ...BENCH_RUN_FLAGS,
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const size = parseSize(values.size);
  // rbd create takes whole MiB, and a 1 MiB job must fit at least once.
  if (size % MIB !== 0 || size < 16 * MIB) throw new Error(`--size must be a whole number of MiB, at least 16M (not ${formatSize(size)})`);
  return {
    runtimeSec: whole('runtime', values.runtime),
    rounds: whole('rounds', values.rounds),
    jobs: names('--jobs', values.jobs ?? DEFAULT_JOBS.join(','), FIO_JOBS),
    size,
    setups: names('--servers', values.servers ?? RADOS_SETUPS.map((s) => s.name).join(','), RADOS_SETUPS),
    cephConf: values['ceph-conf'],
    osds: whole('osds', values.osds),
    id: values.id,
    strataPool: values['strata-pool'],
    rbdPool: values['rbd-pool'],
    dir: values.dir,
    out: values.out ?? path.join('.scratch', 'bench', `rados-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
    json: values.json,
    keep: values.keep,
  };
}

function whole(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} must be a whole number ≥ 1, not '${text}'`);
  return n;
}

/** The named items of `all`, in the order given, each once. */
function names<T extends { name: string }>(option: string, text: string, all: readonly T[]): T[] {
  const wanted = [...new Set(text.split(',').map((s) => s.trim()).filter((s) => s !== ''))];
  if (wanted.length === 0) throw new Error(`${option} names none of: ${all.map((x) => x.name).join(', ')}`);
  return wanted.map((name) => {
    const hit = all.find((x) => x.name === name);
    if (!hit) throw new Error(`${option}: unknown '${name}' (of: ${all.map((x) => x.name).join(', ')})`);
    return hit;
  });
}
