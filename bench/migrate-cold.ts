import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { strata } from './chain-cli.js';
import type { DataImage } from './migrate-data.js';
import { migrateVolume } from './migrate-cli.js';
import { serveVolume, type RunningServer } from './nbd-servers.js';

const run = promisify(execFile);

/**
 * Cold migration throughput: one volume moved between two file pools of
 * one home with `strata migrate POOL/VOL POOL2` (back and forth, a round
 * each way), against `qemu-img convert` from the volume's export to a fresh
 * volume's export in the other pool (both pools served by `strata serve`).
 * The two alternate, so neither always meets the warmer page cache.
 */
export type ColdTool = 'strata migrate' | 'qemu-img convert';

export interface ColdSample {
  tool: ColdTool;
  round: number;
  seconds: number;
  /** Data bytes of the volume (its holes not counted) per second, in 10^6 B/s. */
  mbPerSec: number;
}

export interface ColdReport {
  size: number;
  dataBytes: number;
  samples: ColdSample[];
  /** Why `strata migrate` did not run (this build lacks it), or null. */
  skipped: string | null;
  /** `qemu-img compare` of the first moved volume with the image. */
  sameData: boolean | undefined;
}

const VOLUME = 'v';
const COPY = 'w';
const POOLS = ['a', 'b'] as const;

export async function runColdBench(dir: string, image: DataImage, rounds: number, log: (line: string) => void): Promise<ColdReport> {
  const home = path.join(dir, 'cold-home');
  const report: ColdReport = { size: image.size, dataBytes: image.dataBytes, samples: [], skipped: null, sameData: undefined };
  for (const p of POOLS) await strata(home, 'pool', 'create', p, '--size', String(2 * image.size + 2 ** 30));
  await strata(home, 'import', `${POOLS[0]}/${VOLUME}`, image.path);
  let at: string = POOLS[0];
  const other = () => (at === POOLS[0] ? POOLS[1] : POOLS[0]);
  const sample = (tool: ColdTool, round: number, seconds: number) => {
    const s: ColdSample = { tool, round, seconds, mbPerSec: image.dataBytes / seconds / 1e6 };
    report.samples.push(s);
    log(`cold, round ${round + 1}/${rounds}, ${tool}: ${seconds.toFixed(2)} s, ${s.mbPerSec.toFixed(0)} MB/s`);
  };
  for (let round = 0; round < rounds; round++) {
    const tools: ColdTool[] = round % 2 === 0 ? ['strata migrate', 'qemu-img convert'] : ['qemu-img convert', 'strata migrate'];
    for (const tool of tools) {
      await run('sync');
      if (tool === 'qemu-img convert') {
        sample(tool, round, await convert(home, at, other(), image.size));
        continue;
      }
      if (report.skipped !== null) continue;
      try {
        const to = other();
        const { seconds } = await migrateVolume(home, at, VOLUME, to, false, 30 * 60_000);
        at = to;
        sample(tool, round, seconds);
      } catch (err) {
        report.skipped = err instanceof Error ? err.message.split('\n')[0]! : String(err);
        log(`cold strata migrate skipped: ${report.skipped}`);
        continue;
      }
      if (report.sameData === undefined) report.sameData = await compare(home, at, image.path);
    }
  }
  return report;
}

/** qemu-img convert from FROM/v's export to a fresh TO/w's export; seconds of the convert alone. */
async function convert(home: string, from: string, to: string, size: number): Promise<number> {
  await strata(home, 'volume', 'create', `${to}/${COPY}`, String(size));
  const servers: RunningServer[] = [];
  try {
    servers.push(await serveVolume({ home, pool: from, volume: VOLUME }), await serveVolume({ home, pool: to, volume: COPY }));
    const t0 = performance.now();
    // --target-is-zero: the target is a fresh thin volume, as strata migrate's is; qemu-img then skips the holes too.
    await run('qemu-img', ['convert', '-n', '--target-is-zero', '-p', '-f', 'raw', '-O', 'raw', servers[0]!.uri, servers[1]!.uri], { maxBuffer: 16 << 20 });
    return (performance.now() - t0) / 1000;
  } finally {
    for (const s of servers) await s.stop();
    await strata(home, 'volume', 'delete', `${to}/${COPY}`);
  }
}

async function compare(home: string, pool: string, image: string): Promise<boolean> {
  const server = await serveVolume({ home, pool, volume: VOLUME });
  try {
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, server.uri]);
    return true;
  } catch {
    return false;
  } finally {
    await server.stop();
  }
}
