import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobRecord } from '../../src/host/job-record.js';
import { STRATA, startServe, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessFails, inProcessRun } from './in-process.js';
import { buildCli, strata } from './strata.js';

/** A command that reports on stderr (the raid verbs do) and must succeed. */
async function done(home: string, args: string[]): Promise<void> {
  const r = await inProcessRun(home, args);
  if (r.code !== 0) throw new Error(`strata ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
}

const sha = (file: string): string => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** Polls `job list --json` until `pred` holds for some job (the server writes progress down about once a second). */
async function waitForJob(home: string, pred: (j: JobRecord) => boolean): Promise<JobRecord> {
  for (let i = 0; i < 600; i++) {
    const found = (JSON.parse(await inProcess(home, ['--json', 'job', 'list', 'r'])) as JobRecord[]).find(pred);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('no such job after 60 s');
}

describe('strata job', () => {
  const { dir, cleanup } = scratchDir('cli-jobs');
  const home = path.join(dir, 'h');
  const member = (n: string): string => path.join(dir, `${n}.img`);
  let srv: ServeProcess | undefined;

  beforeAll(async () => {
    buildCli();
    await inProcess(home, ['pool', 'create', 'r', '--size', '64M', '--raid', '1', '--members', `${member('a')},${member('b')}`]);
    await inProcess(home, ['volume', 'create', 'r/v', '32M']);
    const img = path.join(dir, 'in.raw');
    const data = Buffer.alloc(8 << 20);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i * 2654435761 >>> 0, i);
    fs.writeFileSync(img, data);
    await inProcess(home, ['import', 'r/v', img, '--force']);
  });
  afterAll(async () => {
    await srv?.stop('SIGKILL');
    cleanup();
  });

  it('lists an import as a done job, with --json and in errors', async () => {
    const jobs = JSON.parse(await inProcess(home, ['--json', 'job', 'list', 'r'])) as JobRecord[];
    expect(jobs).toMatchObject([{ id: 1, kind: 'import', pool: 'r', state: 'done', bytesDone: 8 << 20, bytesTotal: 8 << 20 }]);
    expect(await inProcess(home, ['job', 'show', 'r', '1'])).toMatch(/^job: +1\nkind: +import\n/);
    expect(await inProcess(home, ['job', 'list', 'r'])).toMatch(/^ID +KIND +TARGET +STATE +PROGRESS/);
    expect(await inProcessFails(home, ['job', 'show', 'r', '9'])).toBe("pool 'r' has no job 9");
    const r = strata(home, ['--json', 'job', 'cancel', 'r', '1']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stderr)).toEqual({ error: "job 1 of pool 'r' is not running (it is done)" });
  });

  it('cancels a served rebuild mid-way; after kill -9 of the server the rebuild is interrupted, resumes at the next serve, and nothing is lost', async () => {
    srv = await startServe(['--home', home, 'r', '--listen', '127.0.0.1:0', '--rebuild-rate', '4M']);
    await done(home, ['raid', 'fail', '--pool', 'r', '1']);
    await done(home, ['raid', 'add', '--pool', 'r', member('c'), '--rate', '4M', '--no-wait']);
    const first = await waitForJob(home, (j) => j.kind === 'rebuild' && j.state === 'running' && j.bytesDone > 0);
    expect(first.rate).toBe(4 << 20);
    const cancelled = JSON.parse(await inProcess(home, ['--json', 'job', 'cancel', 'r', String(first.id)])) as JobRecord & { cancelling: boolean };
    expect(cancelled).toMatchObject({ id: first.id, cancelling: true });
    const ended = await waitForJob(home, (j) => j.id === first.id && j.state !== 'running');
    expect(ended.state).toBe('cancelled');
    expect(ended.bytesDone).toBeLessThan(ended.bytesTotal);
    expect(JSON.parse(await inProcess(home, ['--json', 'raid', 'status', 'r'])).state).toBe('rebuilding');

    // A rebuild started again, then the server killed outright in the middle of it.
    const waiter = spawn(process.execPath, [STRATA, '--home', home, 'raid', 'rebuild', 'r', '--rate', '4M'], { stdio: 'ignore' });
    const second = await waitForJob(home, (j) => j.kind === 'rebuild' && j.id > first.id && j.state === 'running' && j.bytesDone > 0);
    await srv.stop('SIGKILL');
    await new Promise((r) => waiter.once('exit', r));
    const after = JSON.parse(await inProcess(home, ['--json', 'job', 'show', 'r', String(second.id)])) as JobRecord;
    expect(after.state).toBe('interrupted');
    expect(after.resumes).toBe('resumes from its checkpoint when the pool is next served, or with: strata raid rebuild r');
    expect(await inProcess(home, ['job', 'list', 'r'])).toMatch(new RegExp(`${second.id} +rebuild .* interrupted .*resumes from its checkpoint`));

    // Served again: the rebuild goes on by itself from its checkpoint, as a new job.
    srv = await startServe(['--home', home, 'r', '--listen', '127.0.0.1:0']);
    await done(home, ['raid', 'rebuild', 'r']);
    const third = await waitForJob(home, (j) => j.kind === 'rebuild' && j.id > second.id && j.state === 'done');
    expect(third.bytesDone).toBe(third.bytesTotal);
    expect((JSON.parse(await inProcess(home, ['--json', 'job', 'show', 'r', String(second.id)])) as JobRecord).resumes).toBe(`resumed as job ${third.id}`);
    await srv.stop();
    srv = undefined;

    expect(JSON.parse(await inProcess(home, ['--json', 'raid', 'status', 'r'])).state).toBe('optimal');
    expect(JSON.parse(await inProcess(home, ['--json', 'pool', 'check', 'r'])).problems).toEqual([]);
    const out = path.join(dir, 'out.raw');
    await inProcess(home, ['export', 'r/v', out]);
    expect(createHash('sha256').update(fs.readFileSync(out).subarray(0, 8 << 20)).digest('hex')).toBe(sha(path.join(dir, 'in.raw')));
    const kinds = (JSON.parse(await inProcess(home, ['--json', 'job', 'list', 'r'])) as JobRecord[]).map((j) => `${j.kind}:${j.state}`);
    expect(kinds.at(-1)).toBe('export:done');
  });
});
