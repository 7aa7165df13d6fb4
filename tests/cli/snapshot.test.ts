import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobRecord } from '../../src/host/job-record.js';
import { NbdClient } from '../../src/nbd/index.js';
import type { ChainNode, SnapshotInfo, TemplateInfo } from '../../src/snapshot/index.js';
import { STRATA, startServe, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { buildCli, fails, strata } from './strata.js';

const M = 1 << 20;

/** A raw image of `size` bytes: each [offset, length, byte] filled, the rest zero. */
function image(size: number, fills: Array<[number, number, number]>): Buffer {
  const b = Buffer.alloc(size);
  for (const [o, l, v] of fills) b.fill(v, o, o + l);
  return b;
}

/** Every name in a chain tree, depth first. */
function names(n: ChainNode): string[] {
  return [n.name, ...n.children.flatMap(names)];
}

/** Polls `job list --json` until `pred` holds for some job. */
async function waitForJob(home: string, pred: (j: JobRecord) => boolean): Promise<JobRecord> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const found = (await inProcessJson<JobRecord[]>(home, ['job', 'list', 'p'])).find(pred);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('no such job after 60 s');
}

/** Output with what changes from run to run taken out. */
function stable(text: string): string {
  return text.replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, 'TIME').replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'TIME').replace(/"uuid": "[^"]*"/g, 'UUID');
}

describe('strata snapshot, clone, template and volume flatten', () => {
  const { dir, cleanup } = scratchDir('cli-snapshot');
  const home = path.join(dir, 'h');
  const file = (n: string): string => path.join(dir, n);
  let srv: ServeProcess | undefined;
  const size = 16 * M;
  const first = image(size, [[0, 4 * M, 0x11]]);
  const second = image(size, [
    [0, 2 * M, 0x22],
    [2 * M, 2 * M, 0x11],
  ]);

  /** Writes `data` into the volume through import (it overwrites, the rest of the volume stays). */
  const put = async (ref: string, name: string, data: Buffer): Promise<void> => {
    fs.writeFileSync(file(name), data);
    await inProcess(home, ['import', ref, file(name), '--force']);
  };
  /** What the volume reads, whole. */
  const read = async (ref: string): Promise<Buffer> => {
    const out = file(`${ref.replace(/\W/g, '_')}.out`);
    await inProcess(home, ['export', ref, out, '--force']);
    return fs.readFileSync(out);
  };

  beforeAll(async () => {
    buildCli();
    // Small clusters make small map tables, so a flatten of a 16M volume reports its progress in many steps.
    await inProcess(home, ['pool', 'create', 'p', '--size', '1G', '--cluster-size', '4K']);
    await inProcess(home, ['pool', 'create', 'q', '--size', '256M']);
    await inProcess(home, ['volume', 'create', 'p/vm1', '16M']);
    await inProcess(home, ['volume', 'create', 'p/vm2', '16M']);
    await inProcess(home, ['volume', 'create', 'q/other', '16M']);
    await put('p/vm1', 'first.raw', first);
  });
  afterAll(async () => {
    await srv?.stop();
    cleanup();
  });

  it('takes snapshots, alone and as a group, and lists the chain as a tree (human and --json)', async () => {
    expect(await inProcess(home, ['snapshot', 'create', 'p/vm1@s1'])).toBe('created snapshot p/vm1@s1\n');
    await put('p/vm1', 'second.raw', second.subarray(0, 2 * M));
    expect(await inProcess(home, ['snapshot', 'create', 'p/vm1@s2', 'p/vm2@s2'])).toBe('created snapshots p/vm1@s2, p/vm2@s2 (one atomic group)\n');
    const made = await inProcessJson<{ pool: string; full: boolean; snapshots: SnapshotInfo[] }>(home, ['snapshot', 'create', 'p/vm2@s3']);
    expect(made).toMatchObject({ pool: 'p', full: false, snapshots: [{ volume: 'vm2', name: 's3', size }] });
    expect(made.snapshots[0]!.uuid).toMatch(/\S/);

    const listed = await inProcessJson<{ pool: string; volume: string; tree: ChainNode }>(home, ['snapshot', 'list', 'p/vm1']);
    expect(listed).toMatchObject({ pool: 'p', volume: 'vm1' });
    expect(names(listed.tree)).toEqual(['vm1@s1', 'vm1@s2', 'vm1']);
    expect(listed.tree).toMatchObject({ kind: 'snapshot', children: [{ kind: 'snapshot', children: [{ kind: 'volume', children: [] }] }] });
    expect(listed.tree.exclusiveBytes).toBeGreaterThan(0);
    const human = (await inProcess(home, ['snapshot', 'list', 'p/vm1'])).split('\n');
    expect(human[0]).toMatch(/^NAME\s+KIND\s+CREATED\s+EXCLUSIVE$/);
    expect(human[1]).toMatch(/^vm1@s1\s+snapshot\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d+(\.\d+)?[KM]$/);
    expect(human[2]).toMatch(/^└─ vm1@s2\s+snapshot /);
    expect(human[3]).toMatch(/^   └─ vm1\s+volume /);
    // The volume reads what was written last; the snapshot stays as it was.
    expect((await read('p/vm1')).equals(second)).toBe(true);
  });

  it('refuses what is wrong with one line, exit 1, and usage errors with exit 2', async () => {
    // The process itself: exit 1 and one line on stderr.
    expect(fails(home, ['snapshot', 'create', 'p/vm1@s1'])).toBe("strata: snapshot 'p/vm1@s1' already exists");
    expect(await inProcessFails(home, ['snapshot', 'create', 'p/vm2@new', 'p/vm1@s1'])).toBe("snapshot 'p/vm1@s1' already exists (no snapshot of the group was taken)");
    expect(await inProcessFails(home, ['snapshot', 'create', 'p/ghost@s'])).toBe("volume 'ghost' not found in pool 'p'");
    expect(await inProcessFails(home, ['snapshot', 'create', 'p/vm1@a', 'q/other@a'])).toBe("the snapshots of a group must be in one pool (got 'p', 'q')");
    expect(await inProcessFails(home, ['snapshot', 'create', 'p/vm1@a', 'p/vm2@a', '--full'])).toBe('--full takes one POOL/VOL@SNAP (a group snapshot shares its blocks)');
    expect(await inProcessFails(home, ['snapshot', 'create', 'p/vm1'])).toBe("'p/vm1' names no snapshot (expected POOL/VOL@SNAP, e.g. pool0/vm1@before-upgrade)");
    expect(await inProcessFails(home, ['snapshot', 'delete', 'p/vm1@nope'])).toBe("snapshot 'vm1@nope' not found in pool 'p'");
    expect(await inProcessFails(home, ['snapshot', 'list', 'p/ghost'])).toBe("volume 'ghost' not found in pool 'p'");
    expect(await inProcessFails(home, ['snapshot', 'delete', 'p/vm1@s1', '--rate', 'fast'])).toMatch(/^invalid size 'fast'/);
    expect(await inProcessFails(home, ['clone', 'p/vm1', 'p/c9'])).toBe("'p/vm1' is a volume, not a template: clone one of its snapshots (p/vm1@SNAP), or make a template of it first");
    expect(await inProcessFails(home, ['clone', 'p/vm1@s1', 'p/vm2'])).toBe("'p/vm2' already exists (a volume or template of that name)");
    const e = strata(home, ['--json', 'snapshot', 'delete', 'p/vm1@nope']);
    expect(e.code).toBe(1);
    expect(JSON.parse(e.stderr)).toEqual({ error: "snapshot 'vm1@nope' not found in pool 'p'" });
    for (const args of [['snapshot', 'create'], ['clone', 'p/vm1@s1'], ['snapshot', 'revert', 'p/vm1@s1', '--nope']]) {
      expect(strata(home, args).code, args.join(' ')).toBe(2);
    }
  });

  it('clones a snapshot (linked and --full); volume info shows the chain and the origin', async () => {
    expect(await inProcess(home, ['clone', 'p/vm1@s1', 'p/c1'])).toBe('cloned p/vm1@s1 to p/c1: 16M, linked\n');
    expect((await read('p/c1')).equals(first)).toBe(true);
    const info = await inProcessJson<{ name: string; chain: string[]; origin: string | null; layers: unknown[] }>(home, ['volume', 'info', 'p/c1']);
    expect(info).toMatchObject({ name: 'c1', chain: ['c1', 'vm1@s1'], origin: 'vm1@s1' });
    const human = await inProcess(home, ['volume', 'info', 'p/c1']);
    expect(human).toMatch(/^chain: +c1 -> vm1@s1$/m);
    expect(human).toMatch(/^origin: +vm1@s1$/m);
    expect((await inProcessJson<{ origin: string | null }>(home, ['volume', 'info', 'p/vm2'])).origin).toBeNull();

    const full = await inProcessJson<{ name: string; origin: string; full: boolean; incomplete: boolean }>(home, ['clone', 'p/vm1@s1', 'p/f1', '--full']);
    expect(full).toMatchObject({ pool: 'p', name: 'f1', origin: 'p/vm1@s1', full: true, incomplete: false });
    expect((await read('p/f1')).equals(first)).toBe(true);
    expect(await inProcessJson<{ chain: string[]; origin: string | null }>(home, ['volume', 'info', 'p/f1'])).toMatchObject({ chain: ['f1'], origin: null });
    // Clones of clones.
    await inProcess(home, ['snapshot', 'create', 'p/c1@a']);
    await inProcess(home, ['clone', 'p/c1@a', 'p/c2']);
    expect((await inProcessJson<{ chain: string[] }>(home, ['volume', 'info', 'p/c2'])).chain).toEqual(['c2', 'c1@a', 'vm1@s1']);
    expect((await read('p/c2')).equals(first)).toBe(true);
  });

  it('refuses to delete a snapshot that clones depend on; flatten detaches them, then the delete frees its space', async () => {
    expect(await inProcessFails(home, ['snapshot', 'delete', 'p/vm1@s1'])).toMatch(/^snapshot 'vm1@s1' has dependent clones: .*c1/);
    expect(await inProcessFails(home, ['snapshot', 'delete', 'p/c1@a'])).toMatch(/^snapshot 'c1@a' has dependent clones: c2/);
    expect(await inProcess(home, ['volume', 'flatten', 'p/c2', '--rate', '64M'])).toMatch(/^flattened p\/c2: /);
    expect(await inProcess(home, ['snapshot', 'delete', 'p/c1@a', '--rate', '64M'])).toMatch(/^deleted snapshot p\/c1@a: \S+ freed\n$/);
    expect(await inProcessFails(home, ['snapshot', 'delete', 'p/c1@a'])).toBe("snapshot 'c1@a' not found in pool 'p'");
    expect((await read('p/c2')).equals(first)).toBe(true);
    expect(await inProcess(home, ['volume', 'flatten', 'p/c1'])).toMatch(/^flattened p\/c1: /);
    expect(await inProcessJson<{ chain: string[]; origin: string | null }>(home, ['volume', 'info', 'p/c1'])).toMatchObject({ chain: ['c1'], origin: null });
    // What the list says only the snapshot holds is what its delete frees.
    const said = (await inProcessJson<{ tree: ChainNode }>(home, ['snapshot', 'list', 'p/vm1'])).tree;
    expect(said.name).toBe('vm1@s1');
    const r = await inProcessJson<{ pool: string; deleted: string; freedBytes: number }>(home, ['snapshot', 'delete', 'p/vm1@s1']);
    expect(r).toEqual({ pool: 'p', deleted: 'p/vm1@s1', freedBytes: said.exclusiveBytes });
    expect((await read('p/c1')).equals(first)).toBe(true);
    expect((await read('p/vm1')).equals(second)).toBe(true);
    const jobs = await inProcessJson<JobRecord[]>(home, ['job', 'list', 'p']);
    const kinds = jobs.map((j) => `${j.kind} ${j.target} ${j.state}`);
    expect(kinds).toEqual(expect.arrayContaining(['snapshot-delete p/c1@a done', 'flatten p/c2 done', 'flatten p/c1 done', 'snapshot-delete p/vm1@s1 done', 'clone p/f1 from p/vm1@s1 done']));
    expect(jobs.find((j) => j.target === 'p/c2')!.rate).toBe(64 * M);
    expect(await inProcess(home, ['job', 'list', 'p'])).toMatch(/snapshot-delete\s+p\/vm1@s1\s+done/);
  });

  it('reverts to a snapshot and keeps the later ones', async () => {
    await put('p/vm1', 'third.raw', image(M, [[0, M, 0x33]]));
    await inProcess(home, ['snapshot', 'create', 'p/vm1@s3']);
    expect(await inProcess(home, ['snapshot', 'revert', 'p/vm1@s2'])).toBe('reverted p/vm1 to p/vm1@s2\n');
    expect((await read('p/vm1')).equals(second)).toBe(true);
    expect(names((await inProcessJson<{ tree: ChainNode }>(home, ['snapshot', 'list', 'p/vm1'])).tree)).toEqual(expect.arrayContaining(['vm1@s2', 'vm1@s3', 'vm1']));
    await inProcess(home, ['snapshot', 'revert', 'p/vm1@s3']);
    expect((await read('p/vm1')).subarray(0, M).every((b) => b === 0x33)).toBe(true);
  });

  it('a full snapshot leaves the volume sharing nothing with it', async () => {
    expect(await inProcess(home, ['snapshot', 'create', 'p/vm2@whole', '--full'])).toBe('created snapshot p/vm2@whole; p/vm2 now holds its own copy of every block (full)\n');
    expect((await inProcessJson<{ chain: string[] }>(home, ['volume', 'info', 'p/vm2'])).chain).toEqual(['vm2']);
  });

  it('makes templates the three ways; a template with clones is not deleted, and the error lists them', async () => {
    const golden = image(size, [[M, M, 0x44]]);
    await inProcess(home, ['volume', 'create', 'p/gold', '16M']);
    await put('p/gold', 'gold.raw', golden);
    const gold = await inProcessJson<TemplateInfo & { pool: string }>(home, ['template', 'create', 'p/gold']);
    expect(gold).toMatchObject({ pool: 'p', name: 'gold', size });
    expect((await inProcessJson<Array<{ name: string }>>(home, ['volume', 'list', 'p'])).map((v) => v.name)).not.toContain('gold');
    expect(await inProcess(home, ['template', 'clone', 'p/vm1', 'p/t1'])).toBe('created template p/t1 from p/vm1: 16M\n');
    expect(await inProcess(home, ['template', 'clone', 'p/gold', 'p/t2'])).toBe('created template p/t2 from p/gold: 16M\n');
    expect((await inProcessJson<TemplateInfo>(home, ['template', 'info', 'p/t2'])).origin).toBe('gold');
    expect(await inProcess(home, ['clone', 'p/gold', 'p/g1'])).toBe('cloned p/gold to p/g1: 16M, linked\n');
    expect((await read('p/g1')).equals(golden)).toBe(true);
    expect((await inProcessJson<{ origin: string | null }>(home, ['volume', 'info', 'p/g1'])).origin).toBe('gold');
    expect((await inProcessJson<TemplateInfo>(home, ['template', 'info', 'p/gold'])).dependants).toEqual(expect.arrayContaining(['g1']));
    const info = await inProcess(home, ['template', 'info', 'p/gold']);
    expect(info).toMatch(/^template: +p\/gold$/m);
    expect(info).toMatch(/^dependants: +.*g1/m);
    expect((await inProcessJson<TemplateInfo[]>(home, ['template', 'list', 'p'])).map((t) => t.name)).toEqual(['gold', 't1', 't2']);
    expect(await inProcess(home, ['template', 'list', 'p'])).toMatch(/^NAME\s+SIZE\s+ALLOCATED\s+CLONES\s+ORIGIN\s+CREATED$/m);
    expect(await inProcessFails(home, ['template', 'delete', 'p/gold'])).toMatch(/g1/);
    expect(await inProcess(home, ['template', 'delete', 'p/t2'])).toBe('deleted template p/t2\n');
    expect(await inProcessFails(home, ['template', 'info', 'p/t2'])).toBe("template 't2' not found in pool 'p'");
    expect(await inProcess(home, ['pool', 'check', 'p'])).toMatch(/ 0 problems/);
  });

  it('on a served pool: the same answers, revert refused with a client unless --force, a flatten job followed and cancelled', async () => {
    const verbs = [
      ['snapshot', 'list', 'p/vm1'],
      ['template', 'info', 'p/gold'],
    ];
    const runAll = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const v of verbs) out.push(stable(await inProcess(home, v)), stable(await inProcess(home, ['--json', ...v])));
      return out;
    };
    const offline = await runAll();
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    expect(await runAll()).toEqual(offline);
    const port = Number(new URL(srv.uri).port);

    expect(await inProcess(home, ['snapshot', 'create', 'p/vm1@online', 'p/g1@online'])).toBe('created snapshots p/vm1@online, p/g1@online (one atomic group)\n');
    expect(await inProcessFails(home, ['snapshot', 'create', 'p/vm1@online'])).toBe("snapshot 'p/vm1@online' already exists");

    const client = await NbdClient.connect({ port, export: 'vm1' });
    expect(await inProcessFails(home, ['snapshot', 'revert', 'p/vm1@s2'])).toBe("volume 'p/vm1' has 1 connected client; a revert changes the disk under it: disconnect it first, or force the revert to end its connection");
    expect(await inProcessFails(home, ['template', 'create', 'p/vm1'])).toMatch(/^volume 'p\/vm1' has 1 connected client; a template is read-only/);
    expect(await inProcess(home, ['snapshot', 'revert', 'p/vm1@s2', '--force'])).toBe('reverted p/vm1 to p/vm1@s2 (ended 1 connection)\n');
    await expect(client.read(0, 4096)).rejects.toThrow();
    const again = await NbdClient.connect({ port, export: 'vm1' });
    expect((await again.read(0, 4096)).every((b) => b === 0x22)).toBe(true);
    await again.disconnect();

    // A clone with data of its own source to copy in, flattened slowly enough to be watched.
    await put('p/vm1', 'big.raw', image(size, [[0, size, 0x55]]));
    await inProcess(home, ['snapshot', 'create', 'p/vm1@big']);
    await inProcess(home, ['clone', 'p/vm1@big', 'p/slow']);
    const flatten = spawn(process.execPath, [STRATA, '--home', home, 'volume', 'flatten', 'p/slow', '--rate', '2M'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    flatten.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => flatten.once('exit', resolve));
    const job = await waitForJob(home, (j) => j.kind === 'flatten' && j.target === 'p/slow' && j.state === 'running' && j.bytesDone > 0);
    expect(job).toMatchObject({ rate: 2 * M, bytesTotal: expect.any(Number) as number });
    expect(await inProcess(home, ['job', 'list', 'p'])).toMatch(new RegExp(`^ *${job.id}  flatten +p/slow +running +\\d+\\.\\d%`, 'm'));
    // Other verbs are not held up behind the flatten.
    expect(await inProcess(home, ['volume', 'list', 'p'])).toMatch(/slow/);
    await inProcess(home, ['job', 'cancel', 'p', String(job.id)]);
    expect(await exited).toBe(1);
    expect(stderr).toBe(`strata: job ${job.id} was cancelled\n`);
    expect(await inProcessJson<JobRecord>(home, ['job', 'show', 'p', String(job.id)])).toMatchObject({ state: 'cancelled' });
    // Cut short, the clone still reads what it did; flattened again, it is whole and on its own.
    expect((await read('p/slow')).equals(image(size, [[0, size, 0x55]]))).toBe(true);
    await inProcess(home, ['volume', 'flatten', 'p/slow']);
    expect((await inProcessJson<{ chain: string[] }>(home, ['volume', 'info', 'p/slow'])).chain).toEqual(['slow']);
    expect((await read('p/slow')).equals(image(size, [[0, size, 0x55]]))).toBe(true);
    expect((await inProcessJson<{ deleted: string }>(home, ['snapshot', 'delete', 'p/vm1@big'])).deleted).toBe('p/vm1@big');
    expect(await inProcessFails(home, ['template', 'delete', 'p/gold'])).toMatch(/g1/);
    // Clones and templates made while served: a new clone is exported at once.
    expect(await inProcess(home, ['clone', 'p/vm1@online', 'p/oc1'])).toBe('cloned p/vm1@online to p/oc1: 16M, linked\n');
    const oc1 = await NbdClient.connect({ port, export: 'oc1' });
    // The snapshot taken online holds what the volume held then (reverted to s3 above), not what the revert since gave it.
    expect((await oc1.read(0, 4096)).every((b) => b === 0x33)).toBe(true);
    await oc1.disconnect();
    expect(await inProcess(home, ['clone', 'p/gold', 'p/oc2', '--full'])).toBe('cloned p/gold to p/oc2: 16M, a full copy\n');
    expect((await read('p/oc2')).equals(image(size, [[M, M, 0x44]]))).toBe(true);
    expect(await inProcess(home, ['template', 'clone', 'p/oc1', 'p/ot1'])).toBe('created template p/ot1 from p/oc1: 16M\n');
    expect((await inProcessJson<TemplateInfo[]>(home, ['template', 'list', 'p'])).map((t) => t.name)).toEqual(['gold', 'ot1', 't1']);
    // The volume a template was cloned from reads through it from then on.
    expect(await inProcessFails(home, ['template', 'delete', 'p/ot1'])).toBe("template 'ot1' has dependent clones: oc1 (delete or flatten them first)");
    expect(await inProcess(home, ['pool', 'check', 'p'])).toMatch(/ 0 problems/);
  }, 180_000);
});
