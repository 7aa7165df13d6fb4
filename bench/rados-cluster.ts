import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './nbd-servers.js';

const run = promisify(execFile);

/**
 * The Ceph cluster the RADOS benchmark measures on: a one-host cluster of its
 * own (scripts/ceph-cluster.sh, in a folder of the benchmark's) that it stops
 * at the end, or one named by --ceph-conf that it leaves as it found it.
 */
export interface BenchCluster {
  conf: string;
  /** Whether the benchmark started it (and so stops it, and may count its daemons' CPU as the benchmark's alone). */
  own: boolean;
  /** For the legend. */
  detail: string;
  /** The cluster's daemons (mon, mgr, OSDs) when it is the benchmark's own; empty otherwise. */
  daemonPids(): number[];
  /** Stops an own cluster and removes its folder; does nothing for a given one. Synchronous, so an exit path can call it. */
  stop(): void;
}

export function givenCluster(conf: string): BenchCluster {
  if (!fs.existsSync(conf)) throw new Error(`--ceph-conf ${conf}: no such file`);
  return { conf: path.resolve(conf), own: false, detail: `the cluster of ${conf}`, daemonPids: () => [], stop: () => undefined };
}

/**
 * Starts a cluster of `osds` OSDs in `dir` (which must not exist yet);
 * resolves once every placement group is active. `signal` ends the start,
 * and what had started is stopped.
 */
export async function startCluster(dir: string, osds: number, signal?: AbortSignal): Promise<BenchCluster> {
  const script = path.join(repoRoot(), 'scripts', 'ceph-cluster.sh');
  let stopped = false;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    execFileSync('bash', [script, 'stop', dir], { stdio: 'ignore', timeout: 120_000 });
  };
  try {
    const { stdout } = await run('bash', [script, 'start', dir, String(osds)], { timeout: 600_000, ...(signal ? { signal } : {}) });
    const conf = stdout.trim().split('\n').at(-1) ?? '';
    const replicas = osds >= 2 ? 2 : 1;
    return {
      conf,
      own: true,
      detail: `a one-host cluster of its own (scripts/ceph-cluster.sh): 1 mon, 1 mgr, ${osds} BlueStore OSDs on sparse files, ${replicas} replicas`,
      daemonPids: () => daemonsOf(conf),
      stop,
    };
  } catch (err) {
    // Half a cluster is still daemons running: stop what started.
    stop();
    const e = err as { stderr?: string; message: string };
    throw new Error(`could not start a Ceph cluster: ${e.stderr?.trim() || e.message}`);
  }
}

/** Every process whose command line names `conf` after -c, as the script starts each daemon (and as its stop finds them). */
export function daemonsOf(conf: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const at = argv.indexOf('-c');
    if (at >= 0 && argv[at + 1] === conf && /^ceph-(mon|mgr|osd)$/.test(path.basename(argv[0] ?? ''))) pids.push(Number(entry));
  }
  return pids;
}
