import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FaultyDevice, MemoryDevice, PassThroughDevice } from '../../src/blockdev/index.js';
import { parseRequest } from '../../src/host/control-protocol.js';
import { JobStore } from '../../src/host/job-store.js';
import { Jobs } from '../../src/host/jobs.js';
import { deleteAsJob, followReclaimAtOpen } from '../../src/host/reclaim-job.js';
import { reclaimProblem } from '../../src/host/reclaim-problem.js';
import { Pool } from '../../src/qcowlike/index.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('jobs');
afterAll(() => scratch.cleanup());
let n = 0;
const home = (): string => path.join(scratch.dir, `home${++n}`);

describe('Jobs', () => {
  it('records a job that ends done, with its progress, in the home', async () => {
    const h = home();
    const jobs = new Jobs(h, 'p');
    const out = await jobs.run({ kind: 'export', target: 'p/v to x.img', total: 100 }, async (ctl) => {
      ctl.progress(40);
      expect(jobs.get(ctl.id)).toMatchObject({ state: 'running', bytesDone: 40 });
      return 7;
    });
    expect(out).toBe(7);
    const [j] = new Jobs(h, 'p').list();
    expect(j).toMatchObject({ id: 1, kind: 'export', pool: 'p', state: 'done', bytesDone: 100, bytesTotal: 100 });
    expect(j!.endedAt).toBeDefined();
    expect(fs.readdirSync(path.join(h, 'jobs')).sort()).toEqual(['p.json', 'p.lock']);
  });

  it('cancels a running job mid-way: the work sees the signal, the job ends cancelled', async () => {
    const jobs = new Jobs(home(), 'p');
    let started!: () => void;
    const midway = new Promise<void>((r) => (started = r));
    const run = jobs.run({ kind: 'import', target: 'p/v', total: 1000 }, async (ctl) => {
      for (let done = 0; done < 1000; done += 10) {
        if (ctl.signal.aborted) throw new Error('stopped');
        ctl.progress(done);
        if (done === 100) started();
        await new Promise((r) => setImmediate(r));
      }
    });
    await midway;
    const id = jobs.list()[0]!.id;
    expect(jobs.cancel(id).state).toBe('running');
    await expect(run).rejects.toThrow('stopped');
    const j = jobs.get(id);
    expect(j.state).toBe('cancelled');
    expect(j.bytesDone).toBeGreaterThanOrEqual(100);
    expect(j.bytesDone).toBeLessThan(1000);
    expect(() => jobs.cancel(id)).toThrow(/not running \(it is cancelled\)/);
    expect(() => jobs.cancel(99)).toThrow(/has no job 99/);
  });

  it('records a failure with its error', async () => {
    const jobs = new Jobs(home(), 'p');
    await expect(jobs.run({ kind: 'scrub', target: 'array' }, () => Promise.reject(new Error('member 2 unreadable')))).rejects.toThrow();
    expect(jobs.list()[0]).toMatchObject({ state: 'failed', error: 'member 2 unreadable' });
  });

  it('loses no update when two processes record jobs of one pool at once', async () => {
    const h = home();
    const script = (tag: string): string => `
      import { Jobs } from ${JSON.stringify(path.resolve('dist/src/host/jobs.js'))};
      const jobs = new Jobs(${JSON.stringify(h)}, 'p');
      for (let i = 0; i < 40; i++) await jobs.run({ kind: 'export', target: '${tag}' + i }, async () => undefined);
    `;
    const run = (tag: string): Promise<number | null> =>
      new Promise((resolve) => spawn(process.execPath, ['--input-type=module', '-e', script(tag)], { stdio: 'inherit' }).once('exit', resolve));
    expect(await Promise.all([run('a'), run('b')])).toEqual([0, 0]);
    const list = new Jobs(h, 'p').list();
    expect(list.length).toBe(80);
    expect(new Set(list.map((j) => j.id)).size).toBe(80);
    expect(list.every((j) => j.state === 'done')).toBe(true);
  });

  it('reports a job whose process was killed (kill -9) as interrupted, with what to run; ids are not reused', async () => {
    const h = home();
    const script = `
      import { Jobs } from ${JSON.stringify(path.resolve('dist/src/host/jobs.js'))};
      const jobs = new Jobs(${JSON.stringify(h)}, 'p');
      jobs.run({ kind: 'import', target: 'p/v from big.img', total: 1 << 30, restart: 'strata import p/v big.img' }, async (ctl) => {
        ctl.progress(4096);
        process.stdout.write('running\\n');
        await new Promise(() => undefined);
      });
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    const seen = new Jobs(h, 'p').list()[0]!;
    expect(seen).toMatchObject({ state: 'running', pid: child.pid });
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    const jobs = new Jobs(h, 'p');
    expect(jobs.list()[0]).toMatchObject({ state: 'interrupted', restart: 'strata import p/v big.img' });
    expect(jobs.list()[0]!.error).toMatch(/its process \(pid \d+\) ended before the job did/);
    // Written down by the next process that runs the pool's jobs.
    expect(jobs.recover().map((j) => j.id)).toEqual([1]);
    expect(JSON.parse(fs.readFileSync(new JobStore(h, 'p').file, 'utf8')).jobs[0].state).toBe('interrupted');
    await jobs.run({ kind: 'export', target: 'x' }, async () => undefined);
    expect(jobs.list().map((j) => j.id)).toEqual([1, 2]);
  });

  it('runs the work when the job list cannot be written (a home on a full or read-only disk)', async () => {
    const h = home();
    fs.writeFileSync(h, 'not a directory');
    const jobs = new Jobs(h, 'p');
    await expect(jobs.run({ kind: 'export', target: 't' }, async (ctl) => (ctl.id < 0 ? 'ran' : 'recorded'))).resolves.toBe('ran');
  });

  it('checks job requests on the control socket field by field', () => {
    expect(parseRequest('{"op":"job-list"}')).toEqual({ op: 'job-list' });
    expect(parseRequest('{"op":"job-cancel","id":3}')).toEqual({ op: 'job-cancel', id: 3 });
    for (const id of ['"3"', '0', '-1', '1.5', '1e300', 'null']) expect(() => parseRequest(`{"op":"job-show","id":${id}}`)).toThrow("'job-show' needs 'id' (a job number)");
    expect(() => parseRequest('{"op":"job-frob"}')).toThrow(/unknown request 'job-frob' \(.*job-list, job-show, job-cancel\)/);
  });

  it('keeps the job list whole when a write of it fails midway (old list or new, never torn)', () => {
    const h = home();
    const store = new JobStore(h, 'p');
    store.update((jobs) => void jobs.push({ id: 1, kind: 'export', pool: 'p', target: 't', state: 'done', bytesDone: 0, bytesTotal: 0, startedAt: 'x', pid: 1 }));
    expect(() =>
      store.update(() => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(store.read().map((j) => j.id)).toEqual([1]);
    expect(fs.readdirSync(path.join(h, 'jobs')).sort()).toEqual(['p.json', 'p.lock']);
  });
});

/** Fails every read once armed, and remembers the first it failed (a table the reclaim needed). */
class ReadTrap extends PassThroughDevice {
  armed = false;
  firstFailed: number | undefined;
  override async read(buf: Uint8Array, offset: number): Promise<void> {
    if (this.armed) {
      this.firstFailed ??= offset;
      throw new Error(`read of offset ${offset} failed: EIO`);
    }
    return this.inner.read(buf, offset);
  }
  override async close(): Promise<void> {}
}

/** A view whose close() leaves the device open, so a pool on it can be opened again. */
class Reopenable extends PassThroughDevice {
  override async close(): Promise<void> {}
}

describe('reclaim after delete', () => {
  const C = 65536;

  it("a failed reclaim is the delete job's error; retried at open and failing again, it reaches the job and pool info", async () => {
    const h = home();
    const mem = new MemoryDevice({ size: 64 << 20 });
    const trap = new ReadTrap(mem);
    const created = await Pool.create(trap, { clusterSize: C });
    await created.createVolume('v', 32 << 20);
    const vol = await created.openVolume('v');
    // Data in several L2 tables, so the reclaim has tables to read back.
    for (let off = 0; off < 32 << 20; off += 4 << 20) await vol.write(Buffer.alloc(C, 0xab), off);
    await vol.close();
    await created.close();

    const pool = await Pool.open(trap);
    const before = pool.stats().usedClusters;
    // The tables of the deleted layer come in from the device while they are freed: fail those reads.
    trap.armed = true;
    const jobs = new Jobs(h, 'p');
    await expect(deleteAsJob(jobs, pool, 'v')).rejects.toThrow(/EIO/);
    trap.armed = false;
    expect(jobs.list()[0]).toMatchObject({ kind: 'reclaim', target: 'p/v', state: 'failed' });
    expect(jobs.list()[0]!.error).toMatch(/EIO/);
    expect(reclaimProblem(jobs.list())).toMatch(/^job 1 \(p\/v\): .*EIO.*retried at the next read-write open/);
    await pool.close();

    // The next open retries in the background, on a device that still cannot read that table.
    const bad = trap.firstFailed!;
    const faulty = new FaultyDevice(new Reopenable(mem), { rules: [{ ops: ['read'], range: { start: bad, end: bad + C } }] });
    const reopened = await Pool.open(faulty);
    expect(reopened.reclaimAtOpen.layers).toBe(1);
    followReclaimAtOpen(jobs, reopened);
    await reopened.reclaimAtOpen.done;
    await new Promise((r) => setImmediate(r));
    expect(reopened.reclaimAtOpen.error?.message).toMatch(/injected fault/);
    expect(reopened.stats().reclaimError).toBe(reopened.reclaimAtOpen.error!.message);
    expect(jobs.list().at(-1)).toMatchObject({ id: 2, kind: 'reclaim', target: '1 deleted volume', state: 'failed', error: reopened.reclaimAtOpen.error!.message });
    expect(reclaimProblem(jobs.list())).toMatch(/^job 2 \(1 deleted volume\)/);
    await reopened.close();

    // With the device healthy again, the open after that frees the space: the problem is gone, the pool checks clean.
    const healthy = await Pool.open(new Reopenable(mem));
    followReclaimAtOpen(jobs, healthy);
    await healthy.reclaimAtOpen.done;
    await new Promise((r) => setImmediate(r));
    expect(jobs.list().at(-1)).toMatchObject({ id: 3, kind: 'reclaim', state: 'done' });
    expect(reclaimProblem(jobs.list())).toBeUndefined();
    expect(healthy.stats().usedClusters).toBeLessThan(before);
    expect(healthy.stats().volumes).toBe(0);
    const report = await healthy.check();
    expect(report.problems).toEqual([]);
    expect(report.leakedClusters).toBe(0);
    await healthy.close();
  });
});
