import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/index.js';
import { scratchDir } from '../support/scratch.js';
import { metricsUrl, metricValue as value, parseExposition, type Sample } from '../support/metrics.js';
import { hasTool, parseFio, startServe, STRATA, type FioJob } from './support.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const scratch = scratchDir('nbd-metrics');
const home = path.join(scratch.dir, 'home');
afterAll(() => scratch.cleanup());

async function strata(...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [STRATA, '--home', home, ...args], { timeout: 30_000 });
  return stdout;
}

async function scrape(url: string): Promise<Sample[]> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseExposition(await res.text());
}

function fio(args: string[]): Promise<FioJob> {
  return new Promise((resolve, reject) => {
    const child = spawn('fio', [...args, '--output-format=json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(parseFio(out)[0]!) : reject(new Error(`fio exited ${code}: ${err}`))));
  });
}

const EXPORT = { export: 'vm1' };

describe.skipIf(!hasTool('fio'))('strata serve --metrics', () => {
  beforeAll(async () => {
    await strata('pool', 'create', 'p0', '--size', '256M', '--path', path.join(scratch.dir, 'p0.pool'));
    await strata('volume', 'create', 'p0/vm1', '64M');
  });

  it('counts what fio did, per export and command; pool gauges match pool info; refusals are counted', async () => {
    const s = await startServe(['--home', home, 'p0', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0', '--max-connections', '3']);
    let gauges: Sample[];
    try {
      const url = metricsUrl(s);
      const before = await scrape(url);
      expect(value(before, 'strata_export_requests_total', { ...EXPORT, op: 'write' })).toBe(0);
      expect(value(before, 'strata_pool_volumes', { pool: 'p0' })).toBe(1);

      // Rate-limited so that scrapes land while it runs: the counters move during the job, not only after it.
      const job = fio([
        '--name=w', '--ioengine=nbd', `--uri=${s.uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=8', '--size=16M', '--rate=40m',
        '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--end_fsync=1',
      ]);
      let finished = false;
      void job.then(() => (finished = true), () => (finished = true));
      const during: number[] = [];
      let connectedSeen = 0;
      while (!finished) {
        const now = await scrape(url);
        during.push(value(now, 'strata_export_bytes_total', { ...EXPORT, op: 'write' }));
        connectedSeen = Math.max(connectedSeen, value(now, 'strata_export_connections', EXPORT));
        await new Promise((r) => setTimeout(r, 20));
      }
      const done = await job;
      expect(done.error).toBe(0);
      const written = done.write.io_bytes;
      const read = done.read.io_bytes;
      expect(written).toBe(16 * MiB);
      expect(during.some((b) => b > 0 && b < written), `write bytes seen mid-run: ${during.join(',')}`).toBe(true);
      expect(connectedSeen).toBe(1);

      const after = await scrape(url);
      const w = { ...EXPORT, op: 'write' };
      const r = { ...EXPORT, op: 'read' };
      expect(value(after, 'strata_export_bytes_total', w)).toBeGreaterThanOrEqual(written);
      expect(value(after, 'strata_export_bytes_total', r)).toBeGreaterThanOrEqual(read);
      expect(value(after, 'strata_export_requests_total', w)).toBeGreaterThanOrEqual(written / 4096);
      expect(value(after, 'strata_export_requests_total', r)).toBeGreaterThanOrEqual(read / 4096);
      expect(value(after, 'strata_export_requests_total', { ...EXPORT, op: 'flush' })).toBeGreaterThanOrEqual(1);
      expect(value(after, 'strata_export_errors_total', w)).toBe(0);
      expect(value(after, 'strata_export_errors_total', r)).toBe(0);
      expect(value(after, 'strata_export_connections', EXPORT)).toBe(0);
      for (const op of [w, r]) {
        // A histogram as Prometheus reads it: cumulative buckets ending at +Inf = count = requests answered.
        const buckets = after.filter((x) => x.name === 'strata_export_request_duration_seconds_bucket' && x.labels.op === op.op);
        expect(buckets.length).toBeGreaterThan(10);
        for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
        const count = value(after, 'strata_export_request_duration_seconds_count', op);
        expect(buckets.at(-1)!.labels.le).toBe('+Inf');
        expect(buckets.at(-1)!.value).toBe(count);
        expect(count).toBe(value(after, 'strata_export_requests_total', op));
        expect(value(after, 'strata_export_request_duration_seconds_sum', op)).toBeGreaterThan(0);
      }

      // A read past the end is refused: an error, counted against reads.
      const port = Number(/:(\d+)\//.exec(s.uri)![1]);
      const c = await NbdClient.connect({ port, export: 'vm1' });
      await expect(c.read(64 * MiB, 4096)).rejects.toThrow();
      // Two more fill --max-connections 3; a fourth is turned away at accept.
      const more = [await NbdClient.connect({ port, export: 'vm1' }), await NbdClient.connect({ port, export: 'vm1' })];
      await expect(NbdClient.connect({ port, export: 'vm1' })).rejects.toThrow();
      const refused = await scrape(url);
      expect(value(refused, 'strata_export_errors_total', r)).toBe(1);
      expect(value(refused, 'strata_export_connections', EXPORT)).toBe(3);
      expect(value(refused, 'strata_nbd_transmissions')).toBe(3);
      expect(value(refused, 'strata_nbd_refused_total', { reason: 'connection_limit' })).toBe(1);
      for (const x of [c, ...more]) await x.disconnect();
      // An export of the served volume is a job of the pool: counted by kind and state once it ends.
      expect(value(await scrape(url), 'strata_jobs', { pool: 'p0', kind: 'export', state: 'done' })).toBe(0);
      await strata('export', 'p0/vm1', path.join(scratch.dir, 'vm1.raw'));
      const jobs = await scrape(url);
      expect(value(jobs, 'strata_jobs', { pool: 'p0', kind: 'export', state: 'done' })).toBe(1);
      expect(value(jobs, 'strata_jobs', { pool: 'p0', kind: 'export', state: 'failed' })).toBe(0);
      gauges = await scrape(url);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    const info = JSON.parse(await strata('--json', 'pool', 'info', 'p0')) as { totalBytes: number; usedBytes: number; freeBytes: number; volumes: number };
    expect(value(gauges, 'strata_pool_capacity_bytes', { pool: 'p0' })).toBe(info.totalBytes);
    expect(value(gauges, 'strata_pool_allocated_bytes', { pool: 'p0' })).toBe(info.usedBytes);
    expect(value(gauges, 'strata_pool_free_bytes', { pool: 'p0' })).toBe(info.freeBytes);
    expect(value(gauges, 'strata_pool_volumes', { pool: 'p0' })).toBe(info.volumes);
    expect(info.usedBytes).toBeGreaterThan(16 * MiB);
  });

  it('answers 404 off /metrics; a bad or taken --metrics address is one line, and the server exits', async () => {
    const refusal = async (metrics: string): Promise<string> =>
      run(process.execPath, [STRATA, '--home', home, 'serve', 'p0', '--listen', '127.0.0.1:0', '--metrics', metrics], { timeout: 10_000 }).then(
        () => '',
        (e: { stderr: string; code: number }) => `${e.code} ${e.stderr}`,
      );
    const s = await startServe(['--home', home, 'p0', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0']);
    try {
      const url = metricsUrl(s);
      const res = await fetch(url.replace(/\/metrics$/, '/'));
      expect(res.status).toBe(404);
      await res.text();
      // The pool is held by the running server, so this serve stops on the pool, not on the port: use a memory disk.
      const taken = /:(\d+)\/metrics$/.exec(url)![1]!;
      const err = await run(process.execPath, [STRATA, 'serve', '--memory', '1M', '--listen', '127.0.0.1:0', '--metrics', `127.0.0.1:${taken}`], { timeout: 10_000 }).then(
        () => '',
        (e: { stderr: string; code: number }) => `${e.code} ${e.stderr}`,
      );
      expect(err).toMatch(/^1 strata: .*EADDRINUSE.*\n$/);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    expect(await refusal('nowhere')).toBe("1 strata: invalid --metrics 'nowhere' (use HOST:PORT, [IPv6]:PORT)\n");
  });
});

describe('strata serve --metrics on a RAID pool', () => {
  it('shows the array state and degraded members, and follows a member failing', async () => {
    const raidHome = path.join(scratch.dir, 'raid-home');
    const members = [0, 1, 2].map((i) => path.join(scratch.dir, `m${i}.img`));
    await run(process.execPath, [STRATA, '--home', raidHome, 'pool', 'create', 'r', '--size', '64M', '--raid', '5', '--members', members.join(',')], { timeout: 30_000 });
    await run(process.execPath, [STRATA, '--home', raidHome, 'volume', 'create', 'r/vm', '16M'], { timeout: 30_000 });
    const s = await startServe(['--home', raidHome, 'r', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0']);
    try {
      const url = metricsUrl(s);
      const optimal = await scrape(url);
      expect(value(optimal, 'strata_raid_state', { pool: 'r', state: 'optimal' })).toBe(1);
      expect(value(optimal, 'strata_raid_state', { pool: 'r', state: 'degraded' })).toBe(0);
      expect(value(optimal, 'strata_raid_members', { pool: 'r' })).toBe(3);
      expect(value(optimal, 'strata_raid_degraded_members', { pool: 'r' })).toBe(0);
      expect(value(optimal, 'strata_pool_checksum_errors_total', { pool: 'r' })).toBe(0);
      await run(process.execPath, [STRATA, '--home', raidHome, 'raid', 'fail', '--pool', 'r', '1'], { timeout: 30_000 });
      const degraded = await scrape(url);
      expect(value(degraded, 'strata_raid_state', { pool: 'r', state: 'degraded' })).toBe(1);
      expect(value(degraded, 'strata_raid_state', { pool: 'r', state: 'optimal' })).toBe(0);
      expect(value(degraded, 'strata_raid_degraded_members', { pool: 'r' })).toBe(1);
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });
});
