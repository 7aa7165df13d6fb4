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

/** Stops or starts one OSD of the test cluster (scripts/ceph-cluster.sh). */
export async function osd(conf: string, action: 'stop' | 'start', id: number): Promise<void> {
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
