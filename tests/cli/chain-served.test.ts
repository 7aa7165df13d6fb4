import { afterAll, describe, expect, it, vi } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { ControlClient } from '../../src/host/control-client.js';
import { ControlServer } from '../../src/host/control-server.js';
import type { JobRecord } from '../../src/host/job-record.js';
import { Pool } from '../../src/qcowlike/index.js';
import * as chain from '../../src/snapshot/index.js';
import { scratchDir } from '../support/scratch.js';

/**
 * A served pool's control socket with a stand-in for src/snapshot: a long
 * flatten runs beside the other verbs (they are answered while it runs), is
 * a job the socket can cancel, and a stopping server cancels it.
 */
vi.mock('../../src/snapshot/index.js', () => ({ flattenVolume: vi.fn(), revertSnapshot: vi.fn(), listSnapshots: vi.fn() }));
const m = vi.mocked(chain);

/** A flatten that reports progress, then waits until its signal is aborted. */
function flattenUntilAborted(): void {
  m.flattenVolume.mockReset();
  m.flattenVolume.mockImplementation(
    (_p, _v, opts = {}) =>
      new Promise((_ok, fail) => {
        opts.onProgress?.({ done: 1 << 20, total: 4 << 20 });
        opts.signal?.addEventListener('abort', () => fail(opts.signal!.reason as Error));
      }),
  );
}

describe('chain verbs on a served pool', () => {
  const { dir, cleanup } = scratchDir('chain-served');
  afterAll(cleanup);

  async function serve(poolName: string, clients = 0): Promise<{ server: ControlServer; client: ControlClient; pool: Pool; disconnected: string[] }> {
    const pool = await Pool.create(new MemoryDevice({ size: 64 << 20 }), { clusterSize: 4096 });
    await pool.createVolume('vm1', 4 << 20);
    const disconnected: string[] = [];
    const admin = { clientsOf: () => clients, disconnect: async (v: string) => (disconnected.push(v), clients) };
    const server = await ControlServer.start({ home: dir, pool: poolName, opened: pool, admin, rebuildRate: 0, readOnly: false, direct: false, log: () => undefined });
    if (!server) throw new Error('no control socket');
    const client = await ControlClient.connect(dir, poolName);
    if (!client) throw new Error('cannot connect');
    return { server, client, pool, disconnected };
  }

  it('answers other verbs while a flatten runs, and job cancel stops it', async () => {
    flattenUntilAborted();
    const { server, client } = await serve('a');
    const other = (await ControlClient.connect(dir, 'a'))!;
    const flatten = client.request({ op: 'volume-flatten', volume: 'vm1', rate: 1 << 20 });
    const failed = flatten.catch((e: unknown) => e);
    await vi.waitFor(async () => {
      const jobs = (await other.request({ op: 'job-list' })).result as JobRecord[];
      expect(jobs.find((j) => j.kind === 'flatten')).toMatchObject({ target: 'a/vm1', state: 'running', bytesDone: 1 << 20, bytesTotal: 4 << 20, rate: 1 << 20 });
    }, { timeout: 15_000 });
    // Not queued behind the flatten.
    expect(((await other.request({ op: 'volume-list' })).result as Array<{ name: string }>).map((v) => v.name)).toEqual(['vm1']);
    const job = ((await other.request({ op: 'job-list' })).result as JobRecord[]).find((j) => j.kind === 'flatten')!;
    await other.request({ op: 'job-cancel', id: job.id });
    expect(String(await failed)).toMatch(`job ${job.id} was cancelled`);
    expect(((await other.request({ op: 'job-show', id: job.id })).result as JobRecord).state).toBe('cancelled');
    other.close();
    client.close();
    await server.close();
  });

  it('a stopping server cancels the flatten it runs', async () => {
    flattenUntilAborted();
    const { server, client } = await serve('b');
    const failed = client.request({ op: 'volume-flatten', volume: 'vm1' }).catch((e: unknown) => e);
    await vi.waitFor(() => expect(m.flattenVolume).toHaveBeenCalled(), { timeout: 15_000 });
    await server.close();
    expect(await failed).toBeInstanceOf(Error);
    const reason = m.flattenVolume.mock.calls.at(-1)![2]!.signal!.reason as Error;
    expect(reason.message).toBe("the server of pool 'b' is stopping");
    client.close();
  });

  it('a revert with clients is refused over the socket; forced, their connections end first', async () => {
    m.listSnapshots.mockResolvedValue([{ volume: 'vm1', name: 's', uuid: 'u', created: '', size: 4 << 20, layer: 1, exclusiveBytes: 0, dependants: [] }]);
    m.revertSnapshot.mockResolvedValue();
    const { server, client, disconnected } = await serve('c', 1);
    await expect(client.request({ op: 'snapshot-revert', volume: 'vm1', snapshot: 's', force: false })).rejects.toThrow("volume 'c/vm1' has 1 connected client");
    expect(disconnected).toEqual([]);
    expect((await client.request({ op: 'snapshot-revert', volume: 'vm1', snapshot: 's', force: true })).result).toEqual({ reverted: 'c/vm1', to: 'c/vm1@s', disconnected: 1 });
    expect(disconnected).toEqual(['vm1']);
    client.close();
    await server.close();
  });
});
