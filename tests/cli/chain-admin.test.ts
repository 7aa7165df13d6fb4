import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { AdminError, runAdmin, type AdminContext, type AdminRequest } from '../../src/host/admin.js';
import { chainSummary } from '../../src/host/chain-admin.js';
import { Jobs } from '../../src/host/jobs.js';
import { Pool, PoolError, type VolumeInfo } from '../../src/qcowlike/index.js';
import * as chain from '../../src/snapshot/index.js';
import type { ChainJobOptions, ChainNode, SnapshotInfo, TemplateInfo } from '../../src/snapshot/index.js';
import { scratchDir } from '../support/scratch.js';

/**
 * The host layer's chain verbs against a stand-in for src/snapshot: what
 * they check before calling it, how they name what is missing, how jobs see
 * a merge's progress and cancel it, and that a served volume's clients stop
 * a revert. The operations themselves are tested with the library.
 */
vi.mock('../../src/snapshot/index.js', () => ({
  createSnapshots: vi.fn(),
  listSnapshots: vi.fn(),
  chainTree: vi.fn(),
  deleteSnapshot: vi.fn(),
  revertSnapshot: vi.fn(),
  cloneVolume: vi.fn(),
  convertToTemplate: vi.fn(),
  templateFrom: vi.fn(),
  deleteTemplate: vi.fn(),
  templateInfo: vi.fn(),
  listTemplates: vi.fn(),
  flattenVolume: vi.fn(),
  openFrozen: vi.fn(),
}));

const m = vi.mocked(chain);

function snap(volume: string, name: string): SnapshotInfo {
  return { volume, name, uuid: `u-${volume}-${name}`, created: '2026-01-01T00:00:00.000Z', size: 16 << 20, layer: 1, exclusiveBytes: 0, dependants: [] };
}

function tmpl(name: string): TemplateInfo {
  return { name, uuid: `u-${name}`, created: '2026-01-01T00:00:00.000Z', size: 16 << 20, layer: 2, allocatedBytes: 0, origin: null, dependants: [], settings: null };
}

describe('chain verbs in the host layer', () => {
  const { dir, cleanup } = scratchDir('chain-admin');
  let pool: Pool;
  let jobs: Jobs;
  let changed = 0;
  let n = 0;
  const ctx = (more: Partial<AdminContext> = {}): AdminContext => ({ poolName: 'p', jobs, changed: () => void changed++, ...more });
  const run = (req: AdminRequest, more?: Partial<AdminContext>): Promise<unknown> => runAdmin(pool, req, ctx(more));

  beforeEach(async () => {
    vi.resetAllMocks();
    changed = 0;
    pool = await Pool.create(new MemoryDevice({ size: 64 << 20 }), { clusterSize: 4096 });
    await pool.createVolume('vm1', 16 << 20);
    await pool.createVolume('vm2', 16 << 20);
    jobs = new Jobs(dir, `p${n++}`);
  });
  afterAll(cleanup);

  it('refuses to delete a snapshot or a template whose export a client reads; forced, ends those connections first', async () => {
    m.listSnapshots.mockResolvedValue([snap('vm1', 's')]);
    m.deleteSnapshot.mockResolvedValue({ freedBytes: 0 });
    m.deleteTemplate.mockResolvedValue();
    const ended: string[] = [];
    const served = { clientsOf: (key: string) => (key === 'vm1@s' || key === 'gold' ? 2 : 0), disconnect: async (key: string) => (ended.push(key), 2) };
    await expect(run({ op: 'snapshot-delete', volume: 'vm1', snapshot: 's' }, served)).rejects.toThrow("snapshot 'p/vm1@s' is exported and read by 2 connected clients");
    await expect(run({ op: 'template-delete', template: 'gold' }, served)).rejects.toThrow("template 'p/gold' is exported and read by 2 connected clients");
    expect(m.deleteSnapshot).not.toHaveBeenCalled();
    expect(m.deleteTemplate).not.toHaveBeenCalled();
    await run({ op: 'snapshot-delete', volume: 'vm1', snapshot: 's', force: true }, served);
    await run({ op: 'template-delete', template: 'gold', force: true }, served);
    expect(ended).toEqual(['vm1@s', 'gold']);
    expect(m.deleteSnapshot).toHaveBeenCalledTimes(1);
    expect(m.deleteTemplate).toHaveBeenCalledTimes(1);
  });

  it('takes a group snapshot in one call, after checking every volume, and says which snapshot already exists', async () => {
    m.createSnapshots.mockResolvedValue([snap('vm1', 's'), snap('vm2', 's')]);
    const refs = [
      { volume: 'vm1', snapshot: 's' },
      { volume: 'vm2', snapshot: 's' },
    ];
    expect(await run({ op: 'snapshot-create', refs, full: false })).toHaveLength(2);
    expect(m.createSnapshots).toHaveBeenCalledTimes(1);
    expect(m.createSnapshots.mock.calls[0]![1]).toEqual(refs);
    expect(changed).toBe(1);

    m.createSnapshots.mockClear();
    await expect(run({ op: 'snapshot-create', refs: [...refs, { volume: 'nope', snapshot: 's' }], full: false })).rejects.toThrow("volume 'nope' not found in pool 'p'");
    await expect(run({ op: 'snapshot-create', refs: [refs[0]!, refs[0]!], full: false })).rejects.toThrow("volume 'p/vm1' is named twice");
    await expect(run({ op: 'snapshot-create', refs, full: true })).rejects.toThrow('a full snapshot is of one volume');
    expect(m.createSnapshots).not.toHaveBeenCalled();

    m.createSnapshots.mockRejectedValue(new PoolError('EEXIST', 'layer name taken'));
    m.listSnapshots.mockImplementation(async (_p, v) => (v === 'vm2' ? [snap('vm2', 's')] : []));
    await expect(run({ op: 'snapshot-create', refs, full: false })).rejects.toThrow("snapshot 'p/vm2@s' already exists (no snapshot of the group was taken)");
  });

  it('a full snapshot flattens the volume afterwards, as a flatten job', async () => {
    m.createSnapshots.mockResolvedValue([snap('vm1', 's')]);
    m.flattenVolume.mockResolvedValue();
    await run({ op: 'snapshot-create', refs: [{ volume: 'vm1', snapshot: 's' }], full: true });
    expect(m.flattenVolume.mock.calls[0]![1]).toBe('vm1');
    expect(jobs.list().map((j) => [j.kind, j.target, j.state])).toEqual([['flatten', 'p/vm1', 'done']]);
    // A copy that stops leaves the snapshot taken, and the error says how to finish.
    m.createSnapshots.mockResolvedValue([snap('vm1', 't')]);
    m.flattenVolume.mockRejectedValue(new PoolError('ENOSPC', 'pool is full'));
    await expect(run({ op: 'snapshot-create', refs: [{ volume: 'vm1', snapshot: 't' }], full: true })).rejects.toThrow("snapshot 'p/vm1@t' was taken, but the copy that makes it full stopped (pool is full); strata volume flatten p/vm1 finishes it");
    expect(jobs.list().map((j) => j.state)).toEqual(['done', 'failed']);
  });

  it('runs a snapshot delete as a job: progress and the rate reach its record, a cancel reaches the merge', async () => {
    m.listSnapshots.mockResolvedValue([snap('vm1', 's'), snap('vm1', 't')]);
    let release!: () => void;
    const started = new Promise<ChainJobOptions>((resolve) => {
      m.deleteSnapshot.mockImplementation((_p, _ref, opts = {}) => {
        resolve(opts);
        opts.onProgress?.({ done: 3 << 20, total: 16 << 20 });
        return new Promise((ok, fail) => {
          release = () => ok({ freedBytes: 1 << 20 });
          opts.signal?.addEventListener('abort', () => fail(opts.signal!.reason as Error));
        });
      });
    });
    const first = run({ op: 'snapshot-delete', volume: 'vm1', snapshot: 's', rate: 8 << 20 });
    expect((await started).rateBytesPerSec).toBe(8 << 20);
    const [job] = jobs.list();
    expect(job).toMatchObject({ kind: 'snapshot-delete', target: 'p/vm1@s', state: 'running', bytesDone: 3 << 20, bytesTotal: 16 << 20, rate: 8 << 20 });
    release();
    expect(await first).toEqual({ deleted: 'p/vm1@s', freedBytes: 1 << 20 });
    expect(jobs.get(job!.id).state).toBe('done');

    const second = run({ op: 'snapshot-delete', volume: 'vm1', snapshot: 't' });
    await vi.waitFor(() => expect(jobs.list().filter((j) => j.state === 'running')).toHaveLength(1), { timeout: 15_000 });
    const running = jobs.list().find((j) => j.state === 'running')!;
    jobs.cancel(running.id);
    await expect(second).rejects.toThrow(`job ${running.id} was cancelled`);
    expect(jobs.get(running.id)).toMatchObject({ state: 'cancelled', error: 'cancelled by request' });

    // Cancelled once the name is gone: the snapshot is deleted, and the pool finishes freeing its space.
    const third = run({ op: 'snapshot-delete', volume: 'vm1', snapshot: 't' });
    await vi.waitFor(() => expect(jobs.list().filter((j) => j.state === 'running')).toHaveLength(1), { timeout: 15_000 });
    const merging = jobs.list().find((j) => j.state === 'running')!;
    expect(merging.resumes).toBe('resumes at the next read-write open of the pool');
    m.listSnapshots.mockResolvedValue([snap('vm1', 's')]);
    jobs.cancel(merging.id);
    await expect(third).rejects.toThrow(`snapshot 'p/vm1@t' is deleted, but giving back its space stopped (job ${merging.id} was cancelled); it goes on at the next read-write open of the pool`);
  });

  it('names a missing volume, snapshot or template; passes the library refusals through as one line', async () => {
    m.listSnapshots.mockResolvedValue([snap('vm1', 'base')]);
    await expect(run({ op: 'snapshot-delete', volume: 'vm1', snapshot: 'gone' })).rejects.toThrow("snapshot 'vm1@gone' not found in pool 'p'");
    // Refused before it becomes a job.
    expect(jobs.list()).toEqual([]);
    expect(m.deleteSnapshot).not.toHaveBeenCalled();
    await expect(run({ op: 'snapshot-delete', volume: 'ghost', snapshot: 's' })).rejects.toThrow("volume 'ghost' not found in pool 'p'");
    m.deleteSnapshot.mockRejectedValue(new PoolError('EBUSY', 'snapshot vm1@base has dependants:\n vm3, vm4'));
    const err = await run({ op: 'snapshot-delete', volume: 'vm1', snapshot: 'base' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AdminError);
    expect((err as AdminError).code).toBe('EBUSY');
    expect((err as AdminError).message).toBe('snapshot vm1@base has dependants: vm3, vm4');
    m.deleteTemplate.mockRejectedValue(new PoolError('EBUSY', "template 'gold' has dependants: vm5"));
    await expect(run({ op: 'template-delete', template: 'gold' })).rejects.toThrow("template 'gold' has dependants: vm5");
    m.templateInfo.mockRejectedValue(new PoolError('ENOENT', 'x'));
    await expect(run({ op: 'template-info', template: 'gold' })).rejects.toThrow("template 'gold' not found in pool 'p'");
    await expect(run({ op: 'snapshot-list', volume: 'ghost' })).rejects.toThrow("volume 'ghost' not found in pool 'p'");
    expect(changed).toBe(0);
  });

  it('refuses a revert on a volume with clients unless forced; forced, it ends their connections first', async () => {
    const disconnect = vi.fn(async () => 2);
    const served = { clientsOf: (v: string) => (v === 'vm1' ? 2 : 0), disconnect };
    await expect(run({ op: 'snapshot-revert', volume: 'vm1', snapshot: 's', force: false }, served)).rejects.toThrow("volume 'p/vm1' has 2 connected clients");
    expect(m.revertSnapshot).not.toHaveBeenCalled();
    // A forced revert to a snapshot that is not there ends nobody's connection.
    m.listSnapshots.mockResolvedValue([]);
    await expect(run({ op: 'snapshot-revert', volume: 'vm1', snapshot: 's', force: true }, served)).rejects.toThrow("snapshot 'vm1@s' not found in pool 'p'");
    expect(disconnect).not.toHaveBeenCalled();
    m.listSnapshots.mockResolvedValue([snap('vm1', 's')]);
    m.revertSnapshot.mockResolvedValue();
    expect(await run({ op: 'snapshot-revert', volume: 'vm1', snapshot: 's', force: true }, served)).toEqual({ reverted: 'p/vm1', to: 'p/vm1@s', disconnected: 2 });
    expect(disconnect).toHaveBeenCalledWith('vm1');
    expect(m.revertSnapshot.mock.calls[0]!.slice(1)).toEqual([{ volume: 'vm1', snapshot: 's' }, { force: true }]);
    // No clients: no force needed.
    await run({ op: 'snapshot-revert', volume: 'vm2', snapshot: 's', force: false }, served);
    expect(m.revertSnapshot.mock.calls[1]!.slice(1)).toEqual([{ volume: 'vm2', snapshot: 's' }, { force: false }]);
    expect(changed).toBe(2);
  });

  it('clones from a snapshot or a template, and says when a name is a volume or is taken', async () => {
    const made = (await pool.volumeInfo('vm2')) satisfies VolumeInfo;
    m.cloneVolume.mockResolvedValue(made);
    expect(await run({ op: 'clone', source: { volume: 'vm1', snapshot: 's' }, name: 'c1', full: false })).toMatchObject({ origin: 'p/vm1@s', full: false });
    await expect(run({ op: 'clone', source: { template: 'vm1' }, name: 'c2', full: false })).rejects.toThrow("'p/vm1' is a volume, not a template: clone one of its snapshots (p/vm1@SNAP), or make a template of it first");
    m.cloneVolume.mockRejectedValue(new PoolError('EEXIST', 'taken'));
    await expect(run({ op: 'clone', source: { template: 'gold' }, name: 'vm2', full: false })).rejects.toThrow("'p/vm2' already exists (a volume or template of that name)");
    m.cloneVolume.mockRejectedValue(new PoolError('ENOENT', 'none'));
    await expect(run({ op: 'clone', source: { template: 'gold' }, name: 'c3', full: false })).rejects.toThrow("template 'gold' not found in pool 'p'");
  });

  it('a full clone copies what the source reads into a new volume, as a clone job', async () => {
    const v = await pool.openVolume('vm1');
    await v.write(Buffer.alloc(1 << 20, 0x3c), 5 << 20);
    await v.close();
    m.openFrozen.mockImplementation(async () => Object.assign(await pool.openVolume('vm1', { readOnly: true }), { allocationDepth: async () => [] }));
    const info = (await run({ op: 'clone', source: { volume: 'vm1', snapshot: 's' }, name: 'copy', full: true })) as VolumeInfo;
    expect(info).toMatchObject({ name: 'copy', size: 16 << 20, incomplete: false, allocatedBytes: 1 << 20 });
    const copy = await pool.openVolume('copy', { readOnly: true });
    const got = Buffer.alloc(16 << 20);
    await copy.read(got, 0);
    await copy.close();
    const want = Buffer.alloc(16 << 20);
    want.fill(0x3c, 5 << 20, 6 << 20);
    expect(got.equals(want)).toBe(true);
    expect(jobs.list()).toMatchObject([{ kind: 'clone', target: 'p/copy from p/vm1@s', state: 'done', bytesDone: 16 << 20 }]);
    expect(m.cloneVolume).not.toHaveBeenCalled();
  });

  it('a full clone that is cancelled leaves no volume behind', async () => {
    m.openFrozen.mockImplementation(async () => Object.assign(await pool.openVolume('vm1', { readOnly: true }), { allocationDepth: async () => [] }));
    const stop = new AbortController();
    stop.abort(new Error('interrupted'));
    await expect(run({ op: 'clone', source: { volume: 'vm1', snapshot: 's' }, name: 'copy', full: true }, { signal: stop.signal })).rejects.toThrow('interrupted');
    expect(pool.volumeRecords().map((r) => r.name)).toEqual(['vm1', 'vm2']);
    expect(jobs.list()).toMatchObject([{ kind: 'clone', state: 'cancelled' }]);
  });

  it('templates: a volume with clients is not converted; clone resolves a volume or a template by name', async () => {
    await expect(run({ op: 'template-create', volume: 'vm1' }, { clientsOf: () => 1 })).rejects.toThrow("volume 'p/vm1' has 1 connected client; a template is read-only and no longer a volume");
    expect(m.convertToTemplate).not.toHaveBeenCalled();
    m.templateFrom.mockResolvedValue(tmpl('t'));
    await run({ op: 'template-clone', source: 'vm1', name: 't' });
    await run({ op: 'template-clone', source: 'gold', name: 't2' });
    expect(m.templateFrom.mock.calls.map((c) => c[1])).toEqual([{ volume: 'vm1' }, { template: 'gold' }]);
    m.templateFrom.mockRejectedValue(new PoolError('ENOENT', 'none'));
    await expect(run({ op: 'template-clone', source: 'nothing', name: 't3' })).rejects.toThrow("template 'nothing' not found in pool 'p'");
  });

  it('flattens as a job, with the rate given to the library', async () => {
    m.flattenVolume.mockImplementation(async (_p, _v, opts = {}) => {
      opts.onProgress?.({ done: 16 << 20, total: 16 << 20 });
    });
    const info = (await run({ op: 'volume-flatten', volume: 'vm2', rate: 1 << 20 })) as VolumeInfo;
    expect(info.name).toBe('vm2');
    expect(m.flattenVolume.mock.calls[0]![2]).toMatchObject({ rateBytesPerSec: 1 << 20 });
    expect(jobs.list()).toMatchObject([{ kind: 'flatten', target: 'p/vm2', state: 'done', bytesDone: 16 << 20, rate: 1 << 20 }]);
    await expect(run({ op: 'volume-flatten', volume: 'ghost' })).rejects.toThrow("volume 'ghost' not found in pool 'p'");
  });

  it("volume info names a clone's chain and origin from the tree, and walks no tree for a volume of one layer", async () => {
    const node = (kind: ChainNode['kind'], name: string, children: ChainNode[] = []): ChainNode => ({ kind, name, layer: 0, created: '', exclusiveBytes: 0, children });
    m.chainTree.mockResolvedValue(node('template', 'gold', [node('volume', 'vm1'), node('snapshot', 'vm2@b', [node('base', '(deleted)', [node('snapshot', 'vm2@a', [node('volume', 'vm2')])])])]));
    const layers = [
      { id: 3, parent: 2, frozen: false, allocatedBytes: 0 },
      { id: 2, parent: null, frozen: true, allocatedBytes: 0 },
    ];
    const info = { ...(await pool.volumeInfo('vm2')), layers };
    expect(await chainSummary(pool, info)).toEqual({ chain: ['vm2', 'vm2@a', '(deleted)', 'vm2@b', 'gold'], origin: 'gold' });
    expect(await chainSummary(pool, { ...info, name: 'vm1' })).toEqual({ chain: ['vm1', 'gold'], origin: 'gold' });
    m.chainTree.mockClear();
    expect(await run({ op: 'volume-info', volume: 'vm1' })).toMatchObject({ name: 'vm1', chain: ['vm1'], origin: null });
    expect(m.chainTree).not.toHaveBeenCalled();
  });
});
