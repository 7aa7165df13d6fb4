import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, inject } from 'vitest';
import { RadosCluster, type RadosIoctx } from '../../src/blockdev/rados/index.js';

const run = promisify(execFile);

/**
 * The test run's Ceph cluster (tests/support/ceph-setup.ts): its config, or
 * undefined when there is none, in which case RADOS tests skip. With CI=true
 * a missing cluster is a failure, not a skip.
 */
export function cephConf(): string | undefined {
  const conf = inject('cephConf');
  if (conf !== '') return conf;
  if (process.env.CI === 'true') throw new Error('no Ceph cluster for the RADOS tests: install ceph-mon ceph-mgr ceph-osd (scripts/test-deps.sh does, as root)');
  return undefined;
}

/** The Ceph pool the test cluster keeps for Strata (2 replicas over 3 OSDs). */
export const TEST_CEPH_POOL = 'strata';

export function connect(conf: string): Promise<RadosCluster> {
  return RadosCluster.connect({ conf });
}

/** Connects for the tests of the enclosing describe block, and disconnects after them; the getter gives the test pool's ioctx. */
export function useTestPool(conf: string): () => RadosIoctx {
  let cluster: RadosCluster | undefined;
  let io: RadosIoctx | undefined;
  beforeAll(async () => {
    cluster = await connect(conf);
    io = await cluster.ioctx(TEST_CEPH_POOL);
  });
  afterAll(async () => {
    io?.close();
    await cluster?.close();
  });
  return () => {
    if (io === undefined) throw new Error('not connected to the test cluster');
    return io;
  };
}

/** Runs `ceph` against the test cluster; resolves with stdout. */
export async function ceph(conf: string, args: string[]): Promise<string> {
  const { stdout } = await run('ceph', ['-c', conf, ...args], { timeout: 60_000 });
  return stdout;
}

/**
 * Stops or starts one OSD of the test cluster (scripts/ceph-cluster.sh);
 * freeze hangs it (SIGSTOP: its connections stay open, it answers nothing),
 * thaw wakes it and waits until it is up again.
 */
export async function osd(conf: string, action: 'stop' | 'start' | 'freeze' | 'thaw', id: number): Promise<void> {
  await run('bash', [path.resolve('scripts/ceph-cluster.sh'), `osd-${action}`, path.dirname(conf), String(id)], { timeout: 120_000 });
}

/** A name no other test uses, for a device or pool in the shared cluster. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}

/** What `strata pool create NAME` takes to put the pool in the test cluster's Ceph pool (NAME names its objects: use uniqueName). */
export function radosPoolArgs(conf: string): string[] {
  return ['--rados', TEST_CEPH_POOL, '--ceph-conf', conf];
}

/** Every OSD of the cluster by id, and whether it is up in the current map. */
export async function osdsUp(conf: string): Promise<Map<number, boolean>> {
  const map = JSON.parse(await ceph(conf, ['osd', 'dump', '--format', 'json'])) as { osds: Array<{ osd: number; up: number }> };
  return new Map(map.osds.map((o) => [o.osd, o.up === 1]));
}

/** A placement group of a Ceph pool: the OSDs holding it and the one that serves it. */
export interface PlacementGroup {
  pgid: string;
  acting: number[];
  primary: number;
  state: string;
}

export async function placementGroups(conf: string, cephPool: string): Promise<PlacementGroup[]> {
  const out = JSON.parse(await ceph(conf, ['pg', 'ls-by-pool', cephPool, '--format', 'json'])) as { pg_stats: Array<{ pgid: string; acting: number[]; acting_primary: number; state: string }> };
  return out.pg_stats.map((p) => ({ pgid: p.pgid, acting: p.acting, primary: p.acting_primary, state: p.state }));
}

/**
 * Resolves once the pool's placement groups are all active+clean (peering
 * and recovery done) and `ok` holds of them; the groups come from the
 * manager's statistics, which trail a change of the map by seconds.
 */
export async function untilClean(conf: string, cephPool: string, ok: (pgs: PlacementGroup[]) => boolean = () => true, timeoutMs = 300_000): Promise<PlacementGroup[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pgs = await placementGroups(conf, cephPool);
    const unclean = pgs.filter((p) => p.state !== 'active+clean');
    if (pgs.length > 0 && unclean.length === 0 && ok(pgs)) return pgs;
    if (Date.now() > deadline) throw new Error(`Ceph pool '${cephPool}' not clean or not as expected after ${timeoutMs} ms: ${pgs.map((p) => `${p.pgid} ${p.state} [${p.acting.join(',')}] primary ${p.primary}`).join('; ')}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** How much OSD `id` is preferred as the primary (the one that serves reads) of the groups it holds: 0 to 1. */
export async function primaryAffinity(conf: string, id: number, weight: number): Promise<void> {
  await ceph(conf, ['osd', 'primary-affinity', `osd.${id}`, String(weight)]);
}

/** A setting as the cluster's (first) monitor runs with it, from its config file or the config database. */
export async function monSetting(conf: string, key: string): Promise<string> {
  const mons = JSON.parse(await ceph(conf, ['mon', 'dump', '--format', 'json'])) as { mons: Array<{ name: string }> };
  return (await ceph(conf, ['config', 'show', `mon.${mons.mons[0]!.name}`, key])).trim();
}
