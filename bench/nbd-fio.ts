import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The fio jobs of the NBD benchmark (the README's benchmark table lists them). */
export interface FioJob {
  name: string;
  rw: 'randread' | 'randwrite' | 'read' | 'write';
  bs: string;
  iodepth: number;
  /** What the table shows: operations per second, or 10^6 bytes per second. */
  unit: 'IOPS' | 'MB/s';
}

export const FIO_JOBS: FioJob[] = [
  { name: 'randread-4k-qd16', rw: 'randread', bs: '4k', iodepth: 16, unit: 'IOPS' },
  { name: 'randwrite-4k-qd16', rw: 'randwrite', bs: '4k', iodepth: 16, unit: 'IOPS' },
  { name: 'randread-4k-qd1', rw: 'randread', bs: '4k', iodepth: 1, unit: 'IOPS' },
  { name: 'read-1m-qd4', rw: 'read', bs: '1m', iodepth: 4, unit: 'MB/s' },
  { name: 'write-1m-qd4', rw: 'write', bs: '1m', iodepth: 4, unit: 'MB/s' },
];

export interface FioResult {
  /** In the job's unit. */
  value: number;
  ios: number;
  /** Mean completion latency in microseconds. */
  latMeanUs: number;
  latP99Us: number;
  latP999Us: number;
  latMaxUs: number;
  /**
   * CPU time (user + system) of fio and every thread it ran, in microseconds:
   * the client's side of the cost, which for an engine that links the storage
   * library itself (rbd) is the whole of it on this host.
   */
  fioCpuUs: number;
}

/**
 * What fio drives: its engine and the engine's options (an NBD URI, an RBD
 * image, a block device), and what its environment must add (CEPH_CONF).
 */
export interface FioTarget {
  /** For error messages: the URI or image. */
  label: string;
  args: string[];
  env?: Record<string, string>;
}

export function nbdTarget(uri: string): FioTarget {
  return { label: uri, args: ['--ioengine=nbd', `--uri=${uri}`] };
}

interface FioDirection {
  iops: number;
  bw_bytes: number;
  total_ios: number;
  clat_ns: { mean: number; max: number; percentile?: Record<string, number> };
}
interface FioJson {
  jobs: { error: number; read: FioDirection; write: FioDirection }[];
}

export function isWrite(job: FioJob): boolean {
  return job.rw === 'randwrite' || job.rw === 'write';
}

/** `extraArgs` go after the job's own (logs, a different percentile list). */
export function runFio(uri: string, job: FioJob, ioSize: number, runtimeSec: number, extraArgs: string[] = []): Promise<FioResult> {
  return runFioOn(nbdTarget(uri), job, ioSize, runtimeSec, extraArgs);
}

/** `signal` kills fio (an interrupted benchmark). */
export async function runFioOn(target: FioTarget, job: FioJob, ioSize: number, runtimeSec: number, extraArgs: string[] = [], signal?: AbortSignal): Promise<FioResult> {
  const args = [
    `--name=${job.name}`,
    ...target.args,
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    `--size=${ioSize}`,
    '--time_based',
    `--runtime=${runtimeSec}`,
    '--output-format=json',
    ...extraArgs,
  ];
  const { stdout, cpuUs } = await fioTimed(target, args, signal);
  const out = parseFioJson(stdout);
  const j = out.jobs[0];
  if (!j) throw new Error(`fio ${job.name} against ${target.label} reported no job`);
  if (j.error) throw new Error(`fio ${job.name} against ${target.label} failed with error ${j.error}`);
  const d = isWrite(job) ? j.write : j.read;
  return {
    value: job.unit === 'IOPS' ? d.iops : d.bw_bytes / 1e6,
    ios: d.total_ios,
    latMeanUs: d.clat_ns.mean / 1000,
    latP99Us: (d.clat_ns.percentile?.['99.000000'] ?? NaN) / 1000,
    latP999Us: (d.clat_ns.percentile?.['99.900000'] ?? NaN) / 1000,
    latMaxUs: d.clat_ns.max / 1000,
    fioCpuUs: cpuUs,
  };
}

/** Writes the whole measured region once so that read jobs meet allocated data. */
export async function prefill(uri: string, ioSize: number): Promise<void> {
  await prefillOn(nbdTarget(uri), ioSize);
}

export async function prefillOn(target: FioTarget, ioSize: number, signal?: AbortSignal): Promise<void> {
  await fioTimed(target, ['--name=prefill', ...target.args, '--rw=write', '--bs=1m', '--iodepth=4', `--size=${ioSize}`, '--output-format=json'], signal);
}

/**
 * Runs fio under bash, whose `times` then prints the CPU of every process it
 * waited for: fio's own job accounting (usr_cpu, sys_cpu) counts the job's
 * thread only, not the threads a library such as librbd starts in it. The
 * SIGTERM that `signal` sends bash is passed on to fio, which would run on
 * without it.
 */
async function fioTimed(target: FioTarget, args: string[], signal?: AbortSignal): Promise<{ stdout: string; cpuUs: number }> {
  const script = 'fio "$@" & f=$!; trap \'kill $f 2>/dev/null\' TERM; wait $f; s=$?; if kill -0 $f 2>/dev/null; then wait $f; s=$?; fi; times >&2; exit $s';
  const { stdout, stderr } = await run('bash', ['-c', script, 'fio', ...args], {
    maxBuffer: 16 * 1024 * 1024,
    env: { ...process.env, ...target.env },
    ...(signal ? { signal } : {}),
  });
  return { stdout, cpuUs: childrenCpuUs(stderr) };
}

/** The children's user + system time in `times` output (its last line: `0m1.250s 0m0.310s`), in microseconds; NaN if absent. */
export function childrenCpuUs(stderr: string): number {
  const lines = [...stderr.matchAll(/^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/gm)];
  const last = lines.at(-1);
  if (!last) return NaN;
  const seconds = (m: string, s: string) => Number(m) * 60 + Number(s);
  return (seconds(last[1]!, last[2]!) + seconds(last[3]!, last[4]!)) * 1e6;
}

/** fio's nbd engine prints "connected to NBD server" on stdout ahead of the JSON. */
export function parseFioJson(stdout: string): FioJson {
  const start = stdout.indexOf('{');
  if (start < 0) throw new Error(`fio printed no JSON: ${stdout.slice(0, 200)}`);
  return JSON.parse(stdout.slice(start)) as FioJson;
}
