import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, parseFio, startServe, STRATA, tool, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { NbdClient } from '../../src/nbd/index.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { buildCli, strata } from './strata.js';

const tools = ['fio', 'qemu-io', 'qemu-img'].every((t) => hasTool(t));

/** `strata …` without waiting for it: resolves with its exit code and output. */
function running(home: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [STRATA, '--home', home, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}

interface Job {
  id: number;
  kind: string;
  state: string;
  bytesDone: number;
}

async function runningMigration(home: string, pool: string): Promise<Job> {
  for (let i = 0; i < 200; i++) {
    const job = (await inProcessJson<Job[]>(home, ['job', 'list', pool])).find((j) => j.kind === 'migrate' && j.state === 'running' && j.bytesDone > 0);
    if (job) return job;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no migration job started');
}

const volumes = async (home: string, pool: string): Promise<string[]> => (await inProcessJson<Array<{ name: string }>>(home, ['volume', 'list', pool])).map((v) => v.name);

describe.skipIf(!tools)('strata migrate --online on a served pool', () => {
  const { dir, cleanup } = scratchDir('migrate-online');
  const home = path.join(dir, 'h');
  let srv: ServeProcess | undefined;
  const uri = (name: string): string => `nbd://${new URL(srv!.uri).host}/${name}`;

  beforeAll(async () => {
    buildCli();
    await inProcess(home, ['pool', 'create', 'a', '--size', '1G']);
    await inProcess(home, ['pool', 'create', 'b', '--size', '1G']);
    await inProcess(home, ['volume', 'create', 'a/vm', '96M']);
    await inProcess(home, ['volume', 'create', 'a/slow', '64M']);
    srv = await startServe(['--home', home, 'a', '--listen', '127.0.0.1:0']);
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 48M', uri('slow')]);
  }, 120_000);
  afterAll(async () => {
    await srv?.stop();
    cleanup();
  });

  const fioArgs = (extra: string[]): string[] => [
    '--name=mig', '--ioengine=nbd', `--uri=${uri('vm')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=40M', '--randseed=7',
    '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json', ...extra,
  ];

  it('moves a volume fio is writing, with its snapshot: no I/O error, every block verifies on the target through the same export, the source is gone, both pools check clean', async () => {
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 80M 8M', uri('vm')]);
    await inProcess(home, ['snapshot', 'create', 'a/vm@before']);
    const fio = tool('fio', fioArgs(['--do_verify=1']), 120_000);
    await new Promise((r) => setTimeout(r, 700));
    const moved = await running(home, ['--json', 'migrate', 'a/vm', 'b', '--online']);
    expect(moved.stderr).toBe('');
    expect(moved.code).toBe(0);
    const result = JSON.parse(moved.stdout) as { source: string; target: string; pivotHeldMs: number };
    expect(result).toMatchObject({ source: 'a/vm', target: 'b/vm' });
    const [job] = parseFio(await fio);
    expect(job!.error).toBe(0);
    // Read again, all of it from the target now, through the name the client used and the new one.
    const [again] = parseFio(await tool('fio', fioArgs(['--verify_only']), 120_000));
    expect(again!.error).toBe(0);
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri('vm'), uri('b/vm')]);
    expect(await volumes(home, 'a')).toEqual(['slow']);
    expect(await volumes(home, 'b')).toEqual(['vm']);
    expect(await inProcess(home, ['snapshot', 'list', 'b/vm'])).toMatch(/before/);
    await tool('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x77 80M 8M', uri('b/vm@before')]);
    for (const p of ['a', 'b']) expect((await inProcessJson<{ problems: unknown[] }>(home, ['pool', 'check', p])).problems).toEqual([]);
    expect((await inProcessJson<Job[]>(home, ['job', 'list', 'a'])).filter((j) => j.kind === 'migrate').map((j) => j.state)).toEqual(['done']);
  }, 180_000);

  it('counts the clients of a moved volume under the name they still use: a cold move of it is refused while one is connected', async () => {
    const client = await NbdClient.connect({ port: Number(new URL(srv!.uri).port), export: 'vm' });
    try {
      expect(await inProcessFails(home, ['migrate', 'b/vm', 'a'])).toBe('b/vm is served and has 1 connected client: use --online to move it while it serves I/O');
    } finally {
      await client.disconnect();
    }
    expect(await volumes(home, 'a')).toEqual(['slow']);
    expect(await volumes(home, 'b')).toEqual(['vm']);
    expect(await inProcess(home, ['snapshot', 'list', 'b/vm'])).not.toMatch(/send-tmp-/);
  }, 60_000);

  it('leaves the source as it was when the job is cancelled before the pivot', async () => {
    const moving = running(home, ['migrate', 'a/slow', 'b/slow', '--online', '--rate', '4M']);
    const job = await runningMigration(home, 'a');
    expect(strata(home, ['snapshot', 'create', 'a/slow@meanwhile']).stderr).toMatch(/is being migrated \(a\/slow to b\/slow\)/);
    await inProcess(home, ['job', 'cancel', 'a', String(job.id)]);
    const r = await moving;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cancelled/);
    expect(await volumes(home, 'a')).toContain('slow');
    expect(await volumes(home, 'b')).not.toContain('slow');
    await tool('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 0 48M', uri('slow')]);
  }, 120_000);

  it('rolls back a migration whose server was killed mid-copy, when the pool is served again', async () => {
    const moving = running(home, ['migrate', 'a/slow', 'b', '--online', '--rate', '4M']);
    await runningMigration(home, 'a');
    await srv!.stop('SIGKILL');
    expect((await moving).code).toBe(1);
    srv = await startServe(['--home', home, 'a', '--listen', '127.0.0.1:0']);
    expect(srv.stderr()).toMatch(/migration of a\/slow to b\/slow, cut short \(copying\), was rolled back/);
    expect(await volumes(home, 'b')).not.toContain('slow');
    await tool('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 0 48M', uri('slow')]);
    expect((await inProcessJson<{ problems: unknown[] }>(home, ['pool', 'check', 'b'])).problems).toEqual([]);
    expect(strata(home, ['job', 'list', 'a']).stdout).toMatch(/migrate .* interrupted/);
  }, 120_000);
});
