import { describe, expect, it } from 'vitest';
import { runAdmin } from '../../src/host/admin.js';
import { Jobs } from '../../src/host/jobs.js';
import { createSnapshots } from '../../src/snapshot/index.js';
import { memoryPool } from '../support/pool.js';
import { scratchDir } from '../support/scratch.js';

describe('chain refusals', () => {
  it('a snapshot with clones and a volume with snapshots are refused before any job is recorded', async () => {
    const { dir, cleanup } = scratchDir('chain-refusals');
    const { pool } = await memoryPool();
    const jobs = new Jobs(dir, 'p');
    const ctx = { poolName: 'p', jobs };
    await pool.createVolume('vm', 4 << 20);
    await createSnapshots(pool, [{ volume: 'vm', snapshot: 's' }]);
    await runAdmin(pool, { op: 'clone', source: { volume: 'vm', snapshot: 's' }, name: 'c', full: false }, ctx);
    await expect(runAdmin(pool, { op: 'snapshot-delete', volume: 'vm', snapshot: 's' }, ctx)).rejects.toThrow("snapshot 'vm@s' has dependent clones: c");
    await expect(runAdmin(pool, { op: 'volume-delete', volume: 'vm', force: false }, ctx)).rejects.toThrow("volume 'p/vm' has snapshots (vm@s); delete them first");
    expect(jobs.list()).toEqual([]);
    await pool.close();
    cleanup();
  });
});
