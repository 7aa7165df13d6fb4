import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { strata } from './chain-cli.js';
import { runLoggedFio, stretch, type LoadJob, type Stretch } from './fio-clat.js';
import { migrateVolume } from './migrate-cli.js';
import type { DataImage } from './migrate-data.js';
import { mirrorAndPivot, qcow2Of, startStorageDaemon } from './migrate-qsd.js';
import { servePool } from './nbd-servers.js';

/**
 * Hot migration under a client: fio 4 KiB random I/O at QD16 on the served
 * disk for a fixed time, the migration started a few seconds in. Strata:
 * `strata serve a` and `strata migrate a/v b --online`. QEMU:
 * qemu-storage-daemon on a qcow2 and its write-blocking `blockdev-mirror`
 * into another qcow2, completed. Both disks start from the same image, the
 * two alternate, and the client's IOPS and tail latency are cut out of
 * fio's per-I/O log by wall-clock time: before, during and after.
 */
export type HotServer = 'strata' | 'qemu';

export interface HotSample {
  server: HotServer;
  job: LoadJob;
  round: number;
  /** From the command (or the mirror's start) to the source let go of, in seconds. */
  migrationSec: number;
  /** Data bytes of the image per second of migration, 10^6 B/s. */
  mbPerSec: number;
  before: Stretch;
  during: Stretch;
  after: Stretch;
  /** The migration went on past the end of fio's run, so `during` is its first part only. */
  outlastedFio: boolean;
  fioError: number;
  fioIoErrors: number;
}

export interface HotReport {
  size: number;
  dataBytes: number;
  runtimeSec: number;
  startSec: number;
  samples: HotSample[];
  /** Why the Strata side did not run (this build lacks `migrate --online`), or null. */
  skipped: string | null;
}

export interface HotOptions {
  dir: string;
  image: DataImage;
  jobs: LoadJob[];
  rounds: number;
  runtimeSec: number;
  /** Seconds of fio before the migration starts; the first of them is warm-up and not counted. */
  startSec: number;
}

const WARMUP_MS = 1000;

export async function runHotBench(o: HotOptions, log: (line: string) => void): Promise<HotReport> {
  const report: HotReport = { size: o.image.size, dataBytes: o.image.dataBytes, runtimeSec: o.runtimeSec, startSec: o.startSec, samples: [], skipped: null };
  for (let round = 0; round < o.rounds; round++) {
    for (const job of o.jobs) {
      const servers: HotServer[] = round % 2 === 0 ? ['strata', 'qemu'] : ['qemu', 'strata'];
      for (const server of servers) {
        if (server === 'strata' && report.skipped !== null) continue;
        const work = fs.mkdtempSync(path.join(o.dir, `hot-${server}-`));
        try {
          const s = server === 'strata' ? await strataSample(work, o, job, round) : await qemuSample(work, o, job, round);
          report.samples.push(s);
          log(`hot, round ${round + 1}/${o.rounds}, ${job}, ${server}: migration ${s.migrationSec.toFixed(2)} s; ` +
            `${k(s.before.iops)} → ${k(s.during.iops)} → ${k(s.after.iops)} IOPS; during p99.9 ${s.during.p999Ms.toFixed(2)} ms, max ${s.during.maxMs.toFixed(2)} ms` +
            `${s.fioError || s.fioIoErrors ? `; fio error ${s.fioError}, ${s.fioIoErrors} failed I/Os` : ''}`);
        } catch (err) {
          if (server !== 'strata') throw err;
          report.skipped = err instanceof Error ? err.message.split('\n')[0]! : String(err);
          log(`hot strata migrate --online skipped: ${report.skipped}`);
        } finally {
          fs.rmSync(work, { recursive: true, force: true });
        }
      }
    }
  }
  return report;
}

async function strataSample(work: string, o: HotOptions, job: LoadJob, round: number): Promise<HotSample> {
  const home = path.join(work, 'home');
  for (const p of ['a', 'b']) await strata(home, 'pool', 'create', p, '--size', String(2 * o.image.size + 2 ** 30));
  await strata(home, 'import', 'a/v', o.image.path);
  const server = await servePool(home, 'a', ['v']);
  try {
    return await underLoad('strata', work, server.uri, o, job, round, async () => (await migrateVolume(home, 'a', 'v', 'b', true, 30 * 60_000)).seconds);
  } finally {
    await server.stop();
  }
}

async function qemuSample(work: string, o: HotOptions, job: LoadJob, round: number): Promise<HotSample> {
  const source = path.join(work, 'src.qcow2');
  await qcow2Of(o.image.path, source);
  const qsd = await startStorageDaemon(work, source);
  try {
    return await underLoad('qemu', work, qsd.uri, o, job, round, async () => {
      const t0 = performance.now();
      await mirrorAndPivot(qsd, path.join(work, 'dst.qcow2'), o.image.size, 30 * 60_000);
      return (performance.now() - t0) / 1000;
    });
  } finally {
    await qsd.stop();
  }
}

/** `migrate` resolves with the seconds the move took from its start (it may spend a little more checking afterwards). */
async function underLoad(server: HotServer, work: string, uri: string, o: HotOptions, job: LoadJob, round: number, migrate: () => Promise<number>): Promise<HotSample> {
  const fioStart = Date.now();
  const fio = runLoggedFio(uri, job, o.image.size, o.runtimeSec, path.join(work, 'fio'));
  // A failed migration must not leave fio's promise unwatched.
  fio.catch(() => undefined);
  await sleep(o.startSec * 1000);
  const start = Date.now();
  const end = start + (await migrate()) * 1000;
  const r = await fio;
  const fioEnd = r.at.length > 0 ? r.at[r.at.length - 1]! : end;
  return {
    server,
    job,
    round,
    migrationSec: (end - start) / 1000,
    mbPerSec: o.image.dataBytes / ((end - start) / 1000) / 1e6,
    before: stretch(r, fioStart + WARMUP_MS, start),
    during: stretch(r, start, end),
    after: stretch(r, end, fioEnd),
    outlastedFio: end > fioEnd,
    fioError: r.error,
    fioIoErrors: r.totalErrors,
  };
}

function k(iops: number): string {
  return Number.isFinite(iops) ? `${(iops / 1000).toFixed(1)}k` : '–';
}
