import os from 'node:os';
import path from 'node:path';
import { formatSize } from '../bin/size.js';
import { inBenchDir } from './bench-main.js';
import { prefillOn, runFioOn } from './nbd-fio.js';
import { cpuUs } from './proc-cpu.js';
import { residentMemory, sampleRss } from './proc-memory.js';
import { givenCluster, startCluster, type BenchCluster } from './rados-cluster.js';
import type { RadosBenchOptions } from './rados-options.js';
import { jobResult, reportedValue, type RadosReport, type RadosSample, type RadosServerInfo } from './rados-report.js';
import { ANCHOR, type RadosBenchContext, type RadosRunning, type RadosSetup } from './rados-setups.js';

/**
 * The RADOS benchmark: the same fio jobs against Strata on a RADOS pool, the
 * bare RADOS device under Strata's NBD server, fio's rbd engine and (where
 * the kernel can) rbd-nbd, every image written whole first so that reads
 * meet objects, not holes; the servers take turns on each job in every
 * round, medians over rounds. `signal` (Ctrl-C) stops it between runs or
 * kills the fio running; either way servers, images and an own cluster are
 * cleaned up.
 */
export async function runRadosBench(o: RadosBenchOptions, log: (line: string) => void, signal: AbortSignal): Promise<RadosReport> {
  return inBenchDir(o, 'rados', log, async (dir) => {
    let cluster: BenchCluster;
    if (o.cephConf !== undefined) cluster = givenCluster(o.cephConf);
    else {
      log(`starting a one-host Ceph cluster with ${o.osds} OSDs in ${path.join(dir, 'ceph')}`);
      const started = Date.now();
      cluster = await startCluster(path.join(dir, 'ceph'), o.osds, signal);
      log(`cluster up in ${((Date.now() - started) / 1000).toFixed(0)} s: ${cluster.conf}`);
    }
    try {
      return await measure(o, cluster, dir, log, signal);
    } finally {
      if (cluster.own) log('stopping the Ceph cluster');
      cluster.stop();
    }
  });
}

async function measure(o: RadosBenchOptions, cluster: BenchCluster, dir: string, log: (line: string) => void, signal: AbortSignal): Promise<RadosReport> {
  const ctx: RadosBenchContext = {
    cluster,
    id: o.id,
    strataPool: o.strataPool,
    rbdPool: o.rbdPool,
    dir,
    size: o.size,
    tag: `${process.pid.toString(36)}-${Date.now().toString(36)}`,
  };
  const info = new Map<string, RadosServerInfo>(o.setups.map((s) => [s.name, { name: s.name, detail: s.detail }]));
  const started: { setup: RadosSetup; running: RadosRunning }[] = [];
  const samples = new Map<string, RadosSample[]>();
  const key = (job: string, setup: string) => `${job}\0${setup}`;
  const daemons = cluster.daemonPids();
  try {
    for (const setup of o.setups) {
      const why = setup.unavailable();
      if (why !== undefined) {
        info.get(setup.name)!.notRun = why;
        log(`${setup.name}: not run: ${why}`);
        continue;
      }
      signal.throwIfAborted();
      const running = await setup.start(ctx);
      started.push({ setup, running });
      log(`${setup.name}: ${running.fio.label}${running.serverPid === undefined ? '' : ` (pid ${running.serverPid})`}; writing all ${formatSize(o.size)} once`);
      const t0 = Date.now();
      await prefillOn(running.fio, o.size, signal);
      log(`${setup.name}: written in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
    for (let round = 0; round < o.rounds; round++) {
      for (const job of o.jobs) {
        // Rotate who goes first so that no server always meets a cluster that has just settled (or not).
        const order = started.map((_, i) => started[(i + round) % started.length]!);
        for (const { setup, running } of order) {
          signal.throwIfAborted();
          const server = running.serverPid === undefined ? [] : [running.serverPid];
          const serverBefore = cpuUs(server);
          const loopBefore = cpuUs(server, true);
          const clusterBefore = cpuUs(daemons);
          const rss = running.serverPid === undefined ? undefined : sampleRss(running.serverPid);
          const r = await runFioOn(running.fio, job, o.size, o.runtimeSec, [], signal);
          const peakRssBytes = rss?.stop() ?? NaN;
          const perIo = (us: number) => (r.ios > 0 ? us / r.ios : NaN);
          const sample: RadosSample = {
            round,
            ...r,
            reported: reportedValue(job, r),
            serverCpuUsPerIo: server.length ? perIo(cpuUs(server) - serverBefore) : NaN,
            serverLoopCpuUsPerIo: server.length ? perIo(cpuUs(server, true) - loopBefore) : NaN,
            fioCpuUsPerIo: perIo(r.fioCpuUs),
            clusterCpuUsPerIo: daemons.length ? perIo(cpuUs(daemons) - clusterBefore) : NaN,
            peakRssBytes,
          };
          samples.set(key(job.name, setup.name), [...(samples.get(key(job.name, setup.name)) ?? []), sample]);
          log(
            `round ${round + 1}/${o.rounds} ${job.name} ${setup.name}: ${sample.reported.toFixed(0)} ${job.unit === 'IOPS' ? 'IOPS' : 'MiB/s'}, ` +
              `lat ${r.latMeanUs.toFixed(0)} µs (p99 ${r.latP99Us.toFixed(0)}), CPU µs/IO server ${sample.serverCpuUsPerIo.toFixed(1)} (main thread ${sample.serverLoopCpuUsPerIo.toFixed(1)}) ` +
              `fio ${sample.fioCpuUsPerIo.toFixed(1)} cluster ${sample.clusterCpuUsPerIo.toFixed(1)}` +
              (Number.isNaN(peakRssBytes) ? '' : `, server peak RSS ${(peakRssBytes / 2 ** 20).toFixed(0)} MiB`),
          );
        }
      }
    }
  } finally {
    for (const { setup, running } of started) {
      if (running.serverPid !== undefined) {
        try {
          info.get(setup.name)!.lifetimePeakRssBytes = residentMemory(running.serverPid).peak;
        } catch {
          // Already gone: its stop says how it ended.
        }
      }
      try {
        await running.stop(log);
      } catch (err) {
        log(`${setup.name}: stopping failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
  return {
    date: new Date().toISOString(),
    host: { cpus: os.cpus().length, load: os.loadavg() },
    options: { runtimeSec: o.runtimeSec, rounds: o.rounds, size: o.size, jobs: o.jobs.map((j) => j.name) },
    cluster: { detail: cluster.detail, own: cluster.own },
    anchor: ANCHOR,
    servers: [...info.values()],
    results: o.jobs.flatMap((job) => started.map(({ setup }) => jobResult(job, setup.name, samples.get(key(job.name, setup.name)) ?? []))),
  };
}
