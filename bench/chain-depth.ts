import path from 'node:path';
import { buildQcowChain, buildStrataChain, sameContents } from './chain-build.js';
import { sliceRuns } from './chain-layout.js';
import { FIO_JOBS, runFio, type FioJob } from './nbd-fio.js';
import type { RunningServer } from './nbd-servers.js';
import { qemuNbd, strata } from './nbd-setups.js';
import { residentMemory } from './proc-memory.js';
import { median } from './stats.js';

/**
 * 4K random reads at the top of chains of several depths, Strata against
 * qemu-nbd on qcow2 backing chains with the same data layout. Every chain
 * is built first and every server stays up, so each round measures every
 * depth on both servers within minutes of each other (order rotating).
 */
export interface DepthOptions {
  dir: string;
  size: number;
  grain: number;
  depths: number[];
  rounds: number;
  runtimeSec: number;
  verify: boolean;
  seed: number;
}

export type DepthServer = 'strata' | 'qemu-nbd';

export interface DepthSample {
  round: number;
  iops: number;
  latMeanUs: number;
}

export interface DepthResult {
  depth: number;
  server: DepthServer;
  buildSec: number;
  medianIops: number;
  /** This server's IOPS at this depth over its own at the smallest depth measured in the same round; median over rounds. */
  ofShallowest: number;
  medianLatUs: number;
  /** Resident memory after the rounds, and the process's peak. */
  rssBytes: number;
  peakRssBytes: number;
  /** Whether both servers read the same bytes for this depth (undefined when not verified). */
  sameData?: boolean;
  samples: DepthSample[];
}

const JOB: FioJob = FIO_JOBS.find((j) => j.name === 'randread-4k-qd16')!;

interface Running {
  depth: number;
  server: DepthServer;
  buildSec: number;
  running: RunningServer;
  samples: DepthSample[];
  sameData?: boolean;
}

export async function runDepthBench(o: DepthOptions, log: (line: string) => void): Promise<DepthResult[]> {
  const blocks = Math.floor(o.size / o.grain);
  const servers: Running[] = [];
  try {
    for (const depth of o.depths) {
      const layers = sliceRuns(blocks, depth, o.seed);
      let t0 = performance.now();
      const home = path.join(o.dir, `strata-depth-${depth}`);
      await buildStrataChain(home, o.size, o.grain, layers);
      const strataBuild = (performance.now() - t0) / 1000;
      t0 = performance.now();
      const top = await buildQcowChain(path.join(o.dir, `qcow2-depth-${depth}`), o.size, o.grain, layers);
      const qcowBuild = (performance.now() - t0) / 1000;
      log(`depth ${depth}: chains built (strata ${strataBuild.toFixed(1)} s, qcow2 ${qcowBuild.toFixed(1)} s)`);
      const s: Running = { depth, server: 'strata', buildSec: strataBuild, running: await strata.start(home), samples: [] };
      servers.push(s);
      const q: Running = { depth, server: 'qemu-nbd', buildSec: qcowBuild, running: await qemuNbd.start(top), samples: [] };
      servers.push(q);
      if (o.verify) {
        const v = await sameContents(s.running.uri, top);
        s.sameData = q.sameData = v.same;
        log(`depth ${depth}: strata and qcow2 read ${v.same ? 'the same' : 'DIFFERENT'} data (${v.detail})`);
      }
    }
    for (let round = 0; round < o.rounds; round++) {
      const order = servers.map((_, i) => servers[(i + round * 3) % servers.length]!);
      for (const s of order) {
        const r = await runFio(s.running.uri, JOB, o.size, o.runtimeSec);
        s.samples.push({ round, iops: r.value, latMeanUs: r.latMeanUs });
        log(`round ${round + 1}/${o.rounds} depth ${s.depth} ${s.server}: ${(r.value / 1000).toFixed(1)}k IOPS, lat ${r.latMeanUs.toFixed(0)} µs`);
      }
    }
    const results: DepthResult[] = servers.map((s) => {
      const mem = residentMemory(s.running.pid);
      return {
        depth: s.depth,
        server: s.server,
        buildSec: s.buildSec,
        medianIops: median(s.samples.map((x) => x.iops)),
        ofShallowest: NaN,
        medianLatUs: median(s.samples.map((x) => x.latMeanUs)),
        rssBytes: mem.rss,
        peakRssBytes: mem.peak,
        ...(s.sameData === undefined ? {} : { sameData: s.sameData }),
        samples: s.samples,
      };
    });
    // Each round's own ratio, then the median: the machine drifts between rounds more than within one.
    for (const r of results) {
      const base = results.find((x) => x.server === r.server && x.depth === Math.min(...o.depths));
      const ratios = r.samples.map((x) => x.iops / (base?.samples.find((b) => b.round === x.round)?.iops ?? NaN)).filter((v) => Number.isFinite(v));
      r.ofShallowest = ratios.length > 0 ? median(ratios) : NaN;
    }
    return results;
  } finally {
    for (const s of servers) {
      const exit = await s.running.stop();
      if (exit.code !== 0 && exit.signal !== 'SIGTERM') log(`${s.server} at depth ${s.depth} ended with code ${exit.code}: ${exit.stderr.trim()}`);
    }
  }
}
