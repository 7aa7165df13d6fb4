import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { parseFioJson } from './nbd-fio.js';
import { median } from './stats.js';

/**
 * fio with a completion-latency log of every I/O stamped in Unix epoch
 * milliseconds, so that a stretch of the run (while a migration ran) can be
 * cut out by wall-clock time and its IOPS and tail latency computed.
 */
export type LoadJob = 'randwrite' | 'randrw';

export interface FioRun {
  /** fio's own error code (non-zero: an I/O failed and the job stopped). */
  error: number;
  /** I/Os fio reports as completed with an error (0 unless it was told to continue). */
  totalErrors: number;
  /** Completion times (epoch ms) and latencies (ns), one per I/O, in log order. */
  at: Float64Array;
  clatNs: Float64Array;
}

export interface Stretch {
  /** Median over the stretch's windows of completions per second (all of it when shorter than one window). */
  iops: number;
  ios: number;
  p999Ms: number;
  maxMs: number;
}

const WINDOW_MS = 250;

/** 4 KiB random I/O at queue depth 16 through fio's NBD engine, for `runtimeSec`. */
export async function runLoggedFio(uri: string, job: LoadJob, size: number, runtimeSec: number, logPrefix: string): Promise<FioRun> {
  const args = [
    `--name=${job}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${job}`,
    ...(job === 'randrw' ? ['--rwmixread=50'] : []),
    '--bs=4k',
    '--iodepth=16',
    `--size=${size}`,
    '--time_based',
    `--runtime=${runtimeSec}`,
    `--write_lat_log=${logPrefix}`,
    '--log_unix_epoch=1',
    '--output-format=json',
  ];
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 || out.includes('{') ? resolve(out) : reject(new Error(`fio exited ${code}: ${err.trim()}`))));
  });
  const json = parseFioJson(stdout) as unknown as { jobs: { error: number; total_err?: number }[] };
  const j = json.jobs[0];
  const log = readClatLog(`${logPrefix}_clat.1.log`);
  for (const suffix of ['clat', 'lat', 'slat']) fs.rmSync(`${logPrefix}_${suffix}.1.log`, { force: true });
  return { error: j?.error ?? -1, totalErrors: j?.total_err ?? 0, ...log };
}

/** fio's latency log: `msec, value (ns), direction, block size, offset` per line. */
export function readClatLog(file: string): { at: Float64Array; clatNs: Float64Array } {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const at: number[] = [];
  const lat: number[] = [];
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const c1 = text.indexOf(',', start);
    const c2 = text.indexOf(',', c1 + 1);
    if (c1 > start && c2 > c1 && c2 < end) {
      at.push(Number(text.slice(start, c1)));
      lat.push(Number(text.slice(c1 + 1, c2)));
    }
    start = end + 1;
  }
  return { at: Float64Array.from(at), clatNs: Float64Array.from(lat) };
}

/** IOPS and tail latency of the I/Os that completed in [fromMs, toMs). */
export function stretch(run: Pick<FioRun, 'at' | 'clatNs'>, fromMs: number, toMs: number): Stretch {
  const lats: number[] = [];
  const windows = Math.floor((toMs - fromMs) / WINDOW_MS);
  const counts = new Array<number>(Math.max(windows, 0)).fill(0);
  for (let i = 0; i < run.at.length; i++) {
    const t = run.at[i]!;
    if (t < fromMs || t >= toMs) continue;
    lats.push(run.clatNs[i]!);
    const w = Math.floor((t - fromMs) / WINDOW_MS);
    if (w < windows) counts[w]!++;
  }
  lats.sort((a, b) => a - b);
  const iops = windows > 0 ? median(counts) * (1000 / WINDOW_MS) : toMs > fromMs ? lats.length / ((toMs - fromMs) / 1000) : NaN;
  return {
    iops,
    ios: lats.length,
    p999Ms: lats.length > 0 ? lats[Math.floor(0.999 * (lats.length - 1))]! / 1e6 : NaN,
    maxMs: lats.length > 0 ? lats[lats.length - 1]! / 1e6 : NaN,
  };
}
