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
export async function runFio(uri: string, job: FioJob, ioSize: number, runtimeSec: number, extraArgs: string[] = []): Promise<FioResult> {
  const args = [
    `--name=${job.name}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    `--size=${ioSize}`,
    '--time_based',
    `--runtime=${runtimeSec}`,
    '--output-format=json',
    ...extraArgs,
  ];
  const { stdout } = await run('fio', args, { maxBuffer: 16 * 1024 * 1024 });
  const out = parseFioJson(stdout);
  const j = out.jobs[0];
  if (!j) throw new Error(`fio ${job.name} against ${uri} reported no job`);
  if (j.error) throw new Error(`fio ${job.name} against ${uri} failed with error ${j.error}`);
  const d = isWrite(job) ? j.write : j.read;
  return {
    value: job.unit === 'IOPS' ? d.iops : d.bw_bytes / 1e6,
    ios: d.total_ios,
    latMeanUs: d.clat_ns.mean / 1000,
    latP99Us: (d.clat_ns.percentile?.['99.000000'] ?? NaN) / 1000,
    latP999Us: (d.clat_ns.percentile?.['99.900000'] ?? NaN) / 1000,
    latMaxUs: d.clat_ns.max / 1000,
  };
}

/** Writes the whole measured region once so that read jobs meet allocated data. */
export async function prefill(uri: string, ioSize: number): Promise<void> {
  await run('fio', ['--name=prefill', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1m', '--iodepth=4', `--size=${ioSize}`, '--output-format=json'], {
    maxBuffer: 16 * 1024 * 1024,
  });
}

/** fio's nbd engine prints "connected to NBD server" on stdout ahead of the JSON. */
export function parseFioJson(stdout: string): FioJson {
  const start = stdout.indexOf('{');
  if (start < 0) throw new Error(`fio printed no JSON: ${stdout.slice(0, 200)}`);
  return JSON.parse(stdout.slice(start)) as FioJson;
}
