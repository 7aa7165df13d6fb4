import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';

/**
 * Global setup: a one-host Ceph cluster for the RADOS tests, started before
 * the first test file and stopped after the last (scripts/ceph-cluster.sh).
 * STRATA_TEST_CEPH_CONF names an existing cluster instead; STRATA_TEST_CEPH=off
 * starts none (the RADOS tests then skip, or fail with CI=true).
 */
export default function setup(project: TestProject): (() => void) | undefined {
  const given = process.env.STRATA_TEST_CEPH_CONF;
  if (given !== undefined && given !== '') {
    project.provide('cephConf', given);
    return undefined;
  }
  if (process.env.STRATA_TEST_CEPH === 'off' || !hasCeph()) {
    project.provide('cephConf', '');
    return undefined;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-ceph-'));
  fs.rmdirSync(dir);
  const script = path.resolve('scripts/ceph-cluster.sh');
  const started = Date.now();
  const conf = execFileSync('bash', [script, 'start', dir, '3'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  process.stdout.write(`ceph: one-host cluster with 3 OSDs up in ${((Date.now() - started) / 1000).toFixed(1)} s (${conf})\n`);
  project.provide('cephConf', conf);
  return () => {
    execFileSync('bash', [script, 'stop', dir], { stdio: 'inherit' });
  };
}

function hasCeph(): boolean {
  return ['ceph-mon', 'ceph-osd', 'ceph-mgr'].every((tool) => (process.env.PATH ?? '').split(':').some((d) => fs.existsSync(path.join(d, tool))));
}

declare module 'vitest' {
  export interface ProvidedContext {
    cephConf: string;
  }
}
