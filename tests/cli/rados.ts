import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { ServeProcess } from '../nbd/support.js';
import { ceph, TEST_CEPH_POOL } from '../support/ceph.js';

const run = promisify(execFile);

/**
 * What the CLI tests of pools on RADOS look at from outside Strata: the
 * objects in the Ceph pool, as the `rados` tool lists them, and the OSD
 * blocklist a takeover adds to.
 */

export async function rados(conf: string, args: string[]): Promise<string> {
  const { stdout } = await run('rados', ['-c', conf, '-p', TEST_CEPH_POOL, ...args], { timeout: 60_000, maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

/** The device id its header object names (data objects are strata_data.<id>.<index>). */
export async function deviceId(conf: string, pool: string): Promise<string> {
  const header = JSON.parse(await rados(conf, ['get', `strata_header.${pool}`, '-'])) as { id: string };
  return header.id;
}

/** Every object of the pool's device left in the Ceph pool: its header and the data objects of `id`. */
export async function deviceObjects(conf: string, pool: string, id: string): Promise<string[]> {
  const all = (await rados(conf, ['ls'])).split('\n');
  return all.filter((o) => o === `strata_header.${pool}` || o.startsWith(`strata_data.${id}.`)).sort();
}

/** The RADOS client address a lock holder is named by in the CLI's words ("client.4276 at v1:127.0.0.1:0/2787923259"). */
export function holderAddress(text: string): string {
  const m = /client\.\d+ at (?:v\d:)?([^\s)]+)\)/.exec(text);
  if (!m) throw new Error(`no client address in: ${text}`);
  return m[1]!;
}

/** Entries of the OSD blocklist, as addresses without the expiry. */
export async function blocklist(conf: string): Promise<string[]> {
  const out = await ceph(conf, ['osd', 'blocklist', 'ls']);
  return out
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((a) => a !== '' && a !== 'listed');
}

/** Lifts a fence once the fenced process is gone, so the shared cluster's blocklist does not fill with the tests' clients. */
export async function unblock(conf: string, address: string): Promise<void> {
  await ceph(conf, ['osd', 'blocklist', 'rm', address]);
}

/** The NBD URI of one volume a `strata serve` exports. */
export function exportUri(srv: ServeProcess, volume: string): string {
  return `nbd://127.0.0.1:${new URL(srv.uri).port}/${volume}`;
}
