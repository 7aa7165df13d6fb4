import { afterAll, describe, expect, it } from 'vitest';
import { Jobs } from '../../src/host/jobs.js';
import { refuseMigrating } from '../../src/host/migration-guard.js';
import { MigrationRecords } from '../../src/host/migration-records.js';
import { scratchDir } from '../support/scratch.js';

const scratch = scratchDir('migration-guard');
afterAll(() => scratch.cleanup());

describe('a volume being migrated', () => {
  it('refuses changes to its size, chain and existence while a migration or a push of it runs, and only then', async () => {
    const jobs = new Jobs(scratch.dir, 'p');
    const change = { op: 'snapshot-create' as const, refs: [{ volume: 'vm', snapshot: 's' }], full: false };
    expect(() => refuseMigrating(jobs, 'p', change)).not.toThrow();
    let finish!: () => void;
    const push = jobs.run({ kind: 'migrate', target: 'p/vm to nbd://host:10809/vm' }, () => new Promise<void>((r) => (finish = r)));
    expect(() => refuseMigrating(jobs, 'p', change)).toThrow(/'p\/vm' is being migrated \(job \d+: p\/vm to nbd:/);
    expect(() => refuseMigrating(jobs, 'p', { op: 'volume-resize', volume: 'vm', size: 1 << 30, grow: false, force: false })).toThrow(/being migrated/);
    expect(() => refuseMigrating(jobs, 'p', { op: 'volume-resize', volume: 'vm2', size: 1 << 30, grow: false, force: false })).not.toThrow();
    expect(() => refuseMigrating(jobs, 'p', { op: 'volume-info', volume: 'vm' })).not.toThrow();
    finish();
    await push;
    expect(() => refuseMigrating(jobs, 'p', change)).not.toThrow();
    const rec = new MigrationRecords(scratch.dir).create({ pool: 'p', volume: 'vm' }, { pool: 'q', volume: 'vm' });
    expect(() => refuseMigrating(jobs, 'p', { op: 'volume-delete', volume: 'vm', force: true })).toThrow(/p\/vm to q\/vm/);
    expect(() => refuseMigrating(jobs, 'q', { op: 'volume-delete', volume: 'vm', force: true })).toThrow(/being migrated/);
    new MigrationRecords(scratch.dir).remove(rec);
    expect(() => refuseMigrating(jobs, 'p', { op: 'volume-delete', volume: 'vm', force: true })).not.toThrow();
  });
});
