import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Rng, type BlockDevice } from '../src/blockdev/index.js';
import { withPool } from '../src/host/open-pool.js';
import { cloneVolume, createSnapshots } from '../src/snapshot/index.js';
import { hasCommand, strata } from './chain-cli.js';
import { inParallel } from './chain-create.js';
import { FIO_JOBS, runFio, type FioJob } from './nbd-fio.js';
import { createPoolVolume, exportUri, servePool, type RunningServer } from './nbd-servers.js';
import { median } from './stats.js';

/**
 * The chain operations on a served pool, through the CLI and the control
 * socket as a user runs them, with fio as the client: the worst write
 * latency across snapshots taken every second, and merge (snapshot delete)
 * and flatten throughput with the client's read IOPS during them.
 */
export interface OnlineOptions {
  dir: string;
  /** Size of each volume (the written volume, the merged one, the flattened clones). */
  size: number;
  rounds: number;
  runtimeSec: number;
  /** Seconds between snapshots under load. */
  snapshotEverySec: number;
}

export interface SnapshotLoadResult {
  round: number;
  snapshots: boolean;
  iops: number;
  latP999Us: number;
  latMaxUs: number;
  /** Wall time of each `strata snapshot create` (process start-up included). */
  commandMs: number[];
}

export interface ChainJobResult {
  op: 'snapshot delete' | 'volume flatten';
  round: number;
  /** Wall time of the command, process start-up included. */
  seconds: number;
  /** Virtual bytes of the volume (merge) or bytes of data copied (flatten) per second of the command, in 10^6 B/s. */
  mbPerSec: number;
  /** Client read IOPS in the fio log windows that lie wholly inside the command, and in a run of the same length without it. */
  iopsDuring: number;
  iopsWithout: number;
  /** Windows of the log that counted as during (0: the command was shorter than a window). */
  windows: number;
  /** Merges: what the delete reported it gave back to the pool. */
  freedBytes?: number;
}

export interface OnlineReport {
  /** `strata --version`'s wall time, median of three: the process start-up inside every command's time. */
  cliStartMs: number;
  /** Why a part did not run (the CLI lacks the commands it needs), or null. */
  skipped: { snapshotLoad: string | null; merge: string | null; flatten: string | null };
  snapshotLoad: SnapshotLoadResult[];
  jobs: ChainJobResult[];
}

const POOL = 'online';
const WRITER = 'w';
const MERGED = 'm';
const GOLDEN = 'g';
const WRITE_JOB: FioJob = FIO_JOBS.find((j) => j.name === 'randwrite-4k-qd16')!;
const READ_JOB: FioJob = FIO_JOBS.find((j) => j.name === 'randread-4k-qd16')!;
/** fio's IOPS log resolution. */
const WINDOW_MS = 250;

export async function runOnlineBench(o: OnlineOptions, log: (line: string) => void): Promise<OnlineReport> {
  const [snap, del, flat] = await Promise.all([hasCommand('snapshot', 'create'), hasCommand('snapshot', 'delete'), hasCommand('volume', 'flatten')]);
  const missing = (cmd: string) => `this build of strata has no '${cmd}' command`;
  const report: OnlineReport = {
    skipped: { snapshotLoad: snap ? null : missing('snapshot create'), merge: del ? null : missing('snapshot delete'), flatten: flat ? null : missing('volume flatten') },
    snapshotLoad: [],
    jobs: [],
    cliStartMs: NaN,
  };
  if (!snap && !del && !flat) {
    log('online parts skipped: the CLI has no snapshot create, snapshot delete or volume flatten yet');
    return report;
  }
  const home = path.join(o.dir, 'online-home');
  const starts: number[] = [];
  for (let i = 0; i < 3; i++) starts.push((await strata(home, '--version')).ms);
  report.cliStartMs = median(starts);
  await preparePool(home, o);
  // The volumes by name: a snapshot export a server opened would make its delete refuse (it is in use).
  const server = await servePool(home, POOL, [WRITER, MERGED, ...Array.from({ length: o.rounds }, (_, r) => `f${r}`)]);
  try {
    if (snap) await snapshotLoad(home, server, o, report, log);
    if (del) await merges(home, server, o, report, log);
    if (flat) await flattens(home, server, o, report, log);
  } finally {
    const exit = await server.stop();
    if (exit.code !== 0 && exit.signal !== 'SIGTERM') log(`strata serve ended with code ${exit.code}: ${exit.stderr.trim()}`);
  }
  return report;
}

/**
 * One pool: `w` written whole (fio overwrites it); `m` written whole, then
 * a chain of one snapshot per round, each followed by a rewrite of a random
 * quarter of the clusters (so each delete merges a layer into a child that
 * holds data of its own); `g` written whole with one snapshot and one
 * linked clone of it per round, to flatten.
 */
async function preparePool(home: string, o: OnlineOptions): Promise<void> {
  const R = o.rounds;
  // A sparse file, so generous costs nothing: after each snapshot under load, the first write into each cluster copies the cluster.
  createPoolVolume({ home, pool: POOL, volume: WRITER }, o.size, 64 * o.size + 8 * 2 ** 30);
  await withPool(home, POOL, { readOnly: false }, async ({ pool }) => {
    await pool.createVolume(MERGED, o.size);
    await pool.createVolume(GOLDEN, o.size);
    for (const name of [WRITER, MERGED, GOLDEN]) {
      const vol = await pool.openVolume(name);
      try {
        await fillWhole(vol);
        if (name === MERGED) {
          const rng = new Rng(7);
          for (let r = 0; r < R; r++) {
            await createSnapshots(pool, [{ volume: MERGED, snapshot: `r${r}` }]);
            await rewriteQuarter(vol, rng, r + 1);
          }
        }
        await vol.flush();
      } finally {
        await vol.close();
      }
    }
    await createSnapshots(pool, [{ volume: GOLDEN, snapshot: 'base' }]);
    for (let r = 0; r < R; r++) await cloneVolume(pool, { volume: GOLDEN, snapshot: 'base' }, `f${r}`);
  });
}

async function snapshotLoad(home: string, server: RunningServer, o: OnlineOptions, report: OnlineReport, log: (line: string) => void): Promise<void> {
  const uri = exportUri(server.uri, WRITER);
  // Not counted: the first writes after the fill meet its write-back and cold caches (p99.9 of 100 ms and more).
  execFileSync('sync');
  await runFio(uri, WRITE_JOB, o.size, Math.min(3, o.runtimeSec));
  for (let round = 0; round < o.rounds; round++) {
    // Alternate which goes first, so neither always meets the fresher volume.
    for (const withSnaps of round % 2 === 0 ? [false, true] : [true, false]) {
      // As the NBD benchmark does before every write job: no run inherits the previous one's dirty pages.
      execFileSync('sync');
      const fio = runFio(uri, WRITE_JOB, o.size, o.runtimeSec);
      const commandMs: number[] = [];
      if (withSnaps) {
        let done = false;
        void fio.finally(() => (done = true)).catch(() => undefined);
        const t0 = performance.now();
        // The first at one interval in (fio is running by then), the last one interval before the end.
        for (let i = 1; !done && i * o.snapshotEverySec < o.runtimeSec; i++) {
          const due = t0 + i * o.snapshotEverySec * 1000 - performance.now();
          if (due > 0) await sleep(due);
          if (done) break;
          commandMs.push((await strata(home, 'snapshot', 'create', `${POOL}/${WRITER}@load${round}-${i}`)).ms);
        }
      }
      const r = await fio;
      report.snapshotLoad.push({ round, snapshots: withSnaps, iops: r.value, latP999Us: r.latP999Us, latMaxUs: r.latMaxUs, commandMs });
      log(`snapshot under load, round ${round + 1}/${o.rounds}, ${withSnaps ? `${commandMs.length} snapshots` : 'no snapshots'}: ` +
        `${(r.value / 1000).toFixed(1)}k IOPS, p99.9 ${(r.latP999Us / 1000).toFixed(2)} ms, max ${(r.latMaxUs / 1000).toFixed(2)} ms`);
    }
  }
}

async function merges(home: string, server: RunningServer, o: OnlineOptions, report: OnlineReport, log: (line: string) => void): Promise<void> {
  const uri = exportUri(server.uri, MERGED);
  for (let round = 0; round < o.rounds; round++) {
    // r{round} is the oldest snapshot left: its one child is r{round+1} (or the volume), which it merges into.
    let freed = NaN;
    const r = await underLoad(o, uri, `merge-${round}`, async () => {
      const { stdout } = await strata(home, '--json', 'snapshot', 'delete', `${POOL}/${MERGED}@r${round}`);
      freed = (JSON.parse(stdout) as { freedBytes?: number }).freedBytes ?? NaN;
    });
    const result: ChainJobResult = { op: 'snapshot delete', round, ...r, mbPerSec: o.size / r.seconds / 1e6, freedBytes: freed };
    report.jobs.push(result);
    log(`snapshot delete, round ${round + 1}/${o.rounds}: ${describe(result)}`);
  }
}

async function flattens(home: string, server: RunningServer, o: OnlineOptions, report: OnlineReport, log: (line: string) => void): Promise<void> {
  for (let round = 0; round < o.rounds; round++) {
    const name = `f${round}`;
    // The clone inherits all of g@base, which is written whole: the flatten copies the volume's size in data.
    const r = await underLoad(o, exportUri(server.uri, name), `flatten-${round}`, () => strata(home, 'volume', 'flatten', `${POOL}/${name}`));
    const result: ChainJobResult = { op: 'volume flatten', round, ...r, mbPerSec: o.size / r.seconds / 1e6 };
    report.jobs.push(result);
    log(`volume flatten, round ${round + 1}/${o.rounds}: ${describe(result)}`);
  }
}

function describe(r: ChainJobResult): string {
  return `${r.seconds.toFixed(2)} s, ${r.mbPerSec.toFixed(0)} MB/s; client ${(r.iopsDuring / 1000).toFixed(1)}k IOPS during (${r.windows} windows), ${(r.iopsWithout / 1000).toFixed(1)}k without`;
}

/**
 * fio randread on the volume without the command, then again with the
 * command started one second in; IOPS during it come from fio's IOPS log
 * (windows of WINDOW_MS wholly inside the command's run).
 */
export async function underLoad(o: OnlineOptions, uri: string, tag: string, command: () => Promise<unknown>): Promise<{ seconds: number; iopsDuring: number; iopsWithout: number; windows: number }> {
  const without = await runFio(uri, READ_JOB, o.size, o.runtimeSec);
  const prefix = path.join(o.dir, `fio-${tag}`);
  const spawned = performance.now();
  const fio = runFio(uri, READ_JOB, o.size, o.runtimeSec, [`--write_iops_log=${prefix}`, `--log_avg_msec=${WINDOW_MS}`]);
  await sleep(1000);
  const start = performance.now();
  await command();
  const end = performance.now();
  await fio;
  // A window runs from the previous line's time to its own (fio's windows stretch when the client stalls).
  const log = iopsLog(`${prefix}_iops.1.log`);
  const windows = log.filter((w, i) => (i > 0 ? log[i - 1]!.endMs : w.endMs - WINDOW_MS) >= start - spawned && w.endMs <= end - spawned);
  return {
    seconds: (end - start) / 1000,
    iopsDuring: windows.length > 0 ? median(windows.map((w) => w.iops)) : NaN,
    iopsWithout: without.value,
    windows: windows.length,
  };
}

/** fio's averaged IOPS log: `msec, iops, direction, block size, offset` per line. */
export function iopsLog(file: string): Array<{ endMs: number; iops: number }> {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const [t, v] = l.split(',').map((x) => Number(x.trim()));
      return { endMs: t!, iops: v! };
    });
}

async function fillWhole(vol: BlockDevice): Promise<void> {
  const buf = Buffer.alloc(1 << 20);
  for (let i = 0; i < buf.length; i += 4) buf.writeUInt32LE((i * 2654435761) >>> 0, i);
  const offsets = Array.from({ length: Math.ceil(vol.size / buf.length) }, (_, i) => i * buf.length);
  await inParallel(offsets, 8, (off) => vol.write(buf.subarray(0, Math.min(buf.length, vol.size - off)), off));
}

async function rewriteQuarter(vol: BlockDevice, rng: Rng, fill: number): Promise<void> {
  const C = 64 * 1024;
  const buf = Buffer.alloc(C, fill);
  const clusters = Math.floor(vol.size / C);
  const picked = Array.from({ length: Math.floor(clusters / 4) }, () => rng.below(clusters) * C);
  await inParallel(picked, 16, (off) => vol.write(buf, off));
}
