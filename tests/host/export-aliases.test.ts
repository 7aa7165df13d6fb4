import { describe, expect, it } from 'vitest';
import { PoolExportSource } from '../../src/host/pool-exports.js';
import { MovableDevice } from '../../src/migrate/movable-device.js';
import { memoryPool } from '../support/pool.js';

describe('export names across a hot migration', () => {
  it('keeps the first pool bare when a target pool joins, hides the target while it fills, then makes old and new names one export', async () => {
    const { pool: a } = await memoryPool();
    const { pool: b } = await memoryPool();
    await a.createVolume('vm', 1 << 20);
    const source = new PoolExportSource([{ name: 'a', pool: a }], { readOnly: false, allowIncomplete: false, describe: (p, v) => `${p}/${v}` });
    source.addPool({ name: 'b', pool: b });
    expect(source.exportName('a', 'vm')).toBe('vm');
    expect(source.exportName('b', 'vm')).toBe('b/vm');

    source.alias('vm', { pool: 'b', volume: 'vm', active: false });
    await b.createVolume('vm', 1 << 20);
    expect((await source.list()).map((e) => e.name)).toEqual(['vm']);
    expect(await source.resolve('b/vm')).toBeUndefined();
    expect(await source.resolve('a/vm')).toBe('vm');

    // The pivot: the target complete, the alias active, the source gone.
    source.alias('vm', { pool: 'b', volume: 'vm', active: true });
    await a.deleteVolumeChain('vm');
    expect((await source.list()).map((e) => e.name)).toEqual(['vm']);
    expect(await source.resolve('vm')).toBe('vm');
    expect(await source.resolve('b/vm')).toBe('vm');
    // Its connections are counted under the name they use.
    expect(source.servedName('b', 'vm')).toBe('vm');
    const opened = await source.open('vm');
    expect(opened.device).toBeInstanceOf(MovableDevice);
    expect((opened.device as MovableDevice).volume.name).toContain('vm');
    expect(b.openCount('vm')).toBe(1);
    await opened.release();

    // A new volume under the old name takes it back; the moved one answers to its own name again.
    await a.createVolume('vm', 1 << 20);
    expect((await source.list()).map((e) => e.name).sort()).toEqual(['b/vm', 'vm']);
    expect(await source.resolve('b/vm')).toBe('b/vm');
    expect(source.servedName('b', 'vm')).toBe('b/vm');
    expect(source.servedName('a', 'vm')).toBe('vm');

    // A rolled-back migration takes its alias away.
    source.alias('vm', undefined);
    expect((await source.list()).map((e) => e.name).sort()).toEqual(['b/vm', 'vm']);
  });

  it('keeps the name its clients use when the volume moves on again, back to its first pool: the source answers to it until the pivot, the target after', async () => {
    const { pool: a } = await memoryPool();
    const { pool: b } = await memoryPool();
    await a.createVolume('vm', 1 << 20);
    const source = new PoolExportSource([{ name: 'a', pool: a }], { readOnly: false, allowIncomplete: false, describe: (p, v) => `${p}/${v}` });
    source.addPool({ name: 'b', pool: b });
    const servedFrom = async (name: string): Promise<string> => {
      const opened = await source.open(name);
      const from = a.openCount('vm') > 0 ? 'a' : b.openCount('vm') > 0 ? 'b' : 'neither';
      await opened.release();
      return from;
    };

    source.alias('vm', { pool: 'b', volume: 'vm', active: false });
    await b.createVolume('vm', 1 << 20);
    source.alias('vm', { pool: 'b', volume: 'vm', active: true });
    await a.deleteVolumeChain('vm');
    // The second move holds the export by the name it resolves to, which is the one the clients use.
    expect(await source.resolve(source.exportName('b', 'vm'))).toBe('vm');

    source.alias('vm', { pool: 'a', volume: 'vm', active: false });
    await a.createVolume('vm', 1 << 20);
    expect((await source.list()).map((e) => e.name)).toEqual(['vm']);
    expect(await source.resolve('vm')).toBe('vm');
    expect(await servedFrom('vm')).toBe('b');
    expect(source.servedName('b', 'vm')).toBe('vm');

    source.alias('vm', { pool: 'a', volume: 'vm', active: true });
    await b.deleteVolumeChain('vm');
    expect((await source.list()).map((e) => e.name)).toEqual(['vm']);
    expect(await source.resolve('vm')).toBe('vm');
    expect(await source.resolve('b/vm')).toBeUndefined();
    expect(await servedFrom('vm')).toBe('a');
  });

  it('a move rolled back before its pivot leaves the name where the move before it had put it', async () => {
    const { pool: a } = await memoryPool();
    const { pool: b } = await memoryPool();
    await a.createVolume('vm', 1 << 20);
    const source = new PoolExportSource([{ name: 'a', pool: a }], { readOnly: false, allowIncomplete: false, describe: (p, v) => `${p}/${v}` });
    source.addPool({ name: 'b', pool: b });
    source.alias('vm', { pool: 'b', volume: 'vm', active: false });
    await b.createVolume('vm', 1 << 20);
    source.alias('vm', { pool: 'b', volume: 'vm', active: true });
    await a.deleteVolumeChain('vm');

    source.alias('vm', { pool: 'a', volume: 'vm', active: false });
    await a.createVolume('vm', 1 << 20);
    source.alias('vm', undefined);
    await a.deleteVolumeChain('vm');
    expect((await source.list()).map((e) => e.name)).toEqual(['vm']);
    expect(await source.resolve('b/vm')).toBe('vm');
    const opened = await source.open('vm');
    expect(b.openCount('vm')).toBe(1);
    await opened.release();
  });
});
