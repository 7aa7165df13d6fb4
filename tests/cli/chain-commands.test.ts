import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { commandGroups } from '../../bin/commands/index.js';
import { adminOnPool } from '../../src/host/admin-client.js';
import type { AdminRequest } from '../../src/host/admin.js';
import type { ChainNode, SnapshotInfo, TemplateInfo } from '../../src/snapshot/index.js';

/**
 * The snapshot, clone, template and flatten commands down to the request
 * they send and up from the result they print, with the admin call stood in
 * for (the verbs themselves are tested in chain-admin.test.ts, and end to end
 * in snapshot.test.ts).
 */
vi.mock('../../src/host/admin-client.js', () => ({ adminOnPool: vi.fn() }));
const admin = vi.mocked(adminOnPool);

const when = '2026-12-01T10:00:00.000Z';
const snap = (volume: string, name: string): SnapshotInfo => ({ volume, name, uuid: 'u1', created: when, size: 16 << 20, layer: 2, exclusiveBytes: 0, dependants: [] });
const tmpl = (name: string, more: Partial<TemplateInfo> = {}): TemplateInfo => ({ name, uuid: 'u2', created: when, size: 16 << 20, layer: 3, allocatedBytes: 2 << 20, origin: null, dependants: [], settings: null, ...more });
const volumeInfo = { name: 'c1', size: 16 << 20, allocatedBytes: 0, created: when, readOnly: false, incomplete: false, layers: [{ id: 4, parent: 2, frozen: false, allocatedBytes: 0 }, { id: 2, parent: null, frozen: true, allocatedBytes: 4 << 20 }] };

let out = '';

async function run(...args: string[]): Promise<{ out: string; requests: Array<{ pool: string; req: AdminRequest; readOnly: boolean }> }> {
  out = '';
  admin.mockClear();
  const program = new Command('strata').option('--home <dir>', '', '/nonexistent').option('--json').exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  for (const g of commandGroups) g(program);
  await program.parseAsync(['node', 'strata', ...args]);
  return { out, requests: admin.mock.calls.map(([, pool, req, open]) => ({ pool, req, readOnly: open.readOnly === true })) };
}

describe('snapshot, clone, template and flatten commands', () => {
  beforeEach(() => {
    vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  });
  afterEach(() => vi.restoreAllMocks());

  it('snapshot create sends one request for a group, and says so', async () => {
    admin.mockResolvedValue([snap('a', 's'), snap('b', 's')]);
    const r = await run('snapshot', 'create', 'p/a@s', 'p/b@s');
    expect(r.requests).toEqual([{ pool: 'p', req: { op: 'snapshot-create', refs: [{ volume: 'a', snapshot: 's' }, { volume: 'b', snapshot: 's' }], full: false }, readOnly: false }]);
    expect(r.out).toBe('created snapshots p/a@s, p/b@s (one atomic group)\n');
    admin.mockResolvedValue([snap('a', 's')]);
    expect((await run('snapshot', 'create', 'p/a@s', '--full')).out).toBe('created snapshot p/a@s; p/a now holds its own copy of every block (full)\n');
    expect(JSON.parse((await run('--json', 'snapshot', 'create', 'p/a@s')).out)).toEqual({ pool: 'p', full: false, snapshots: [snap('a', 's')] });
    await expect(run('snapshot', 'create', 'p/a@s', 'q/b@s')).rejects.toThrow("the snapshots of a group must be in one pool (got 'p', 'q')");
    await expect(run('snapshot', 'create', 'p/a@s', 'p/b@s', '--full')).rejects.toThrow('--full takes one POOL/VOL@SNAP');
    expect(admin).not.toHaveBeenCalled();
  });

  it('snapshot list draws the tree, or gives it as JSON', async () => {
    const tree: ChainNode = { kind: 'snapshot', name: 'a@s', layer: 2, created: when, exclusiveBytes: 3 << 20, children: [{ kind: 'volume', name: 'a', layer: 5, created: when, exclusiveBytes: 0, children: [] }] };
    admin.mockResolvedValue({ volume: 'a', tree });
    const r = await run('snapshot', 'list', 'p/a');
    expect(r.requests).toEqual([{ pool: 'p', req: { op: 'snapshot-list', volume: 'a' }, readOnly: true }]);
    expect(r.out).toBe(['NAME  KIND      CREATED              EXCLUSIVE', 'a@s   snapshot  2026-12-01 10:00:00         3M', '└─ a  volume    2026-12-01 10:00:00          0', ''].join('\n'));
    expect(JSON.parse((await run('snapshot', 'list', 'p/a', '--json')).out)).toEqual({ pool: 'p', volume: 'a', tree });
  });

  it('snapshot delete and volume flatten pass the rate; revert passes --force and says what it ended', async () => {
    admin.mockResolvedValue({ deleted: 'p/a@s', freedBytes: 5 << 20 });
    const d = await run('snapshot', 'delete', 'p/a@s', '--rate', '50M');
    expect(d.requests[0]!.req).toEqual({ op: 'snapshot-delete', volume: 'a', snapshot: 's', rate: 50 << 20 });
    expect(d.out).toBe('deleted snapshot p/a@s: 5M freed\n');
    await expect(run('snapshot', 'delete', 'p/a@s', '--rate', '0')).rejects.toThrow('--rate 0: a rate limit must be above 0');
    admin.mockResolvedValue({ ...volumeInfo, name: 'c1', allocatedBytes: 4 << 20 });
    const f = await run('volume', 'flatten', 'p/c1', '--rate', '1M');
    expect(f.requests[0]!.req).toEqual({ op: 'volume-flatten', volume: 'c1', rate: 1 << 20 });
    expect(f.out).toBe('flattened p/c1: 4M now held by the volume itself, nothing read from a snapshot or template\n');
    expect((await run('volume', 'flatten', 'p/c1')).requests[0]!.req).toEqual({ op: 'volume-flatten', volume: 'c1' });
    admin.mockResolvedValue({ reverted: 'p/a', to: 'p/a@s', disconnected: 2 });
    const v = await run('snapshot', 'revert', 'p/a@s', '--force');
    expect(v.requests[0]!.req).toEqual({ op: 'snapshot-revert', volume: 'a', snapshot: 's', force: true });
    expect(v.out).toBe('reverted p/a to p/a@s (ended 2 connections)\n');
  });

  it('clone takes a snapshot or a template in the same pool', async () => {
    admin.mockResolvedValue({ ...volumeInfo, origin: 'p/a@s', full: false, warnings: [] });
    const c = await run('clone', 'p/a@s', 'p/c1');
    expect(c.requests[0]!.req).toEqual({ op: 'clone', source: { volume: 'a', snapshot: 's' }, name: 'c1', full: false });
    expect(c.out).toBe('cloned p/a@s to p/c1: 16M, linked\n');
    admin.mockResolvedValue({ ...volumeInfo, origin: 'p/gold', full: true, warnings: [] });
    const t = await run('clone', 'p/gold', 'p/c1', '--full');
    expect(t.requests[0]!.req).toEqual({ op: 'clone', source: { template: 'gold' }, name: 'c1', full: true });
    expect(t.out).toBe('cloned p/gold to p/c1: 16M, a full copy\n');
    await expect(run('clone', 'p/a@s', 'q/c1')).rejects.toThrow("a clone and its source must be in one pool (got 'p', 'q')");
    await expect(run('clone', 'p/a@s', 'p/c1@x')).rejects.toThrow("'p/c1@x' names a snapshot; this command takes POOL/VOL");
  });

  it('templates: create, clone, info, list, delete', async () => {
    admin.mockResolvedValue(tmpl('gold'));
    expect((await run('template', 'create', 'p/gold')).out).toBe('converted volume p/gold into template p/gold: 16M, read-only and protected\n');
    admin.mockResolvedValue(tmpl('t2', { origin: 'gold' }));
    const c = await run('template', 'clone', 'p/gold', 'p/t2');
    expect(c.requests[0]!.req).toEqual({ op: 'template-clone', source: 'gold', name: 't2' });
    expect(c.out).toBe('created template p/t2 from p/gold: 16M\n');
    admin.mockResolvedValue(tmpl('gold', { dependants: ['c1', 'c2'] }));
    expect((await run('template', 'info', 'p/gold')).out).toBe(
      ['template:   p/gold', 'uuid:       u2', 'size:       16M (16777216 bytes)', 'allocated:  2M (2097152 bytes)', `created:    ${when}`, 'origin:     -', 'dependants: c1, c2', 'vm:         - (none: not imported from a package)', ''].join('\n'),
    );
    admin.mockResolvedValue(tmpl('web', { settings: { name: 'web', cpus: 2, disks: [{ file: 'd1.vmdk', capacity: 1024 }, { file: 'd2.vmdk', capacity: 2048 }], networks: [] } }));
    const withVm = (await run('template', 'info', 'p/web')).out;
    expect(withVm).toMatch(/^vm name: +web$/m);
    expect(withVm).toMatch(/^vm cpus: +2$/m);
    expect(withVm).toMatch(/^vm disks\[2\]: +file=d2\.vmdk capacity=2K$/m);
    expect(withVm).toMatch(/^vm networks: +none$/m);
    expect(JSON.parse((await run('--json', 'template', 'info', 'p/web')).out).settings.disks[1]).toEqual({ file: 'd2.vmdk', capacity: 2048 });
    admin.mockResolvedValue([tmpl('t2', { origin: 'gold' }), tmpl('gold', { dependants: ['c1'] })]);
    const l = await run('template', 'list', 'p');
    expect(l.requests[0]).toEqual({ pool: 'p', req: { op: 'template-list' }, readOnly: true });
    expect(l.out).toBe(['NAME  SIZE  ALLOCATED  CLONES  ORIGIN  CREATED', 'gold   16M         2M       1  -       2026-12-01 10:00:00', 't2     16M         2M       0  gold    2026-12-01 10:00:00', ''].join('\n'));
    expect(JSON.parse((await run('--json', 'template', 'list', 'p')).out).map((t: TemplateInfo & { pool: string }) => [t.pool, t.name])).toEqual([
      ['p', 'gold'],
      ['p', 't2'],
    ]);
    admin.mockResolvedValue([]);
    expect((await run('template', 'list', 'p')).out).toBe("no templates in pool 'p'\n");
    admin.mockResolvedValue({ deleted: 'p/gold' });
    expect((await run('template', 'delete', 'p/gold')).out).toBe('deleted template p/gold\n');
    await expect(run('template', 'info', 'p/gold@x')).rejects.toThrow("'p/gold@x' names a snapshot; this command takes POOL/TEMPLATE");
  });

  it('volume info shows the chain and the origin of a clone', async () => {
    admin.mockResolvedValue({ ...volumeInfo, chain: ['c1', 'a@s'], origin: 'a@s' });
    const text = (await run('volume', 'info', 'p/c1')).out;
    expect(text).toMatch(/^chain: +c1 -> a@s$/m);
    expect(text).toMatch(/^origin: +a@s$/m);
    admin.mockResolvedValue({ ...volumeInfo, layers: volumeInfo.layers.slice(0, 1), chain: ['c1'], origin: null });
    expect((await run('volume', 'info', 'p/c1')).out).not.toMatch(/chain|origin/);
  });
});
