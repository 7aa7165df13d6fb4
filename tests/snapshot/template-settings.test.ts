import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { MAX_SETTINGS_BYTES, Pool, PoolError } from '../../src/qcowlike/index.js';
import { cloneVolume, convertToTemplate, templateFrom, templateInfo } from '../../src/snapshot/index.js';
import { checkSettings } from '../../src/snapshot/template-settings.js';
import { reopenable } from '../support/pool.js';

const vm = { name: 'web', os: 'ubuntu64Guest', cpus: 2, memoryBytes: 2 << 30, disks: [{ file: 'disk1.vmdk', capacity: 16 << 20 }], networks: [{ name: 'VM Network' }] };

async function withTemplate(settings?: typeof vm): Promise<{ pool: Pool; reopen: () => Promise<Pool> }> {
  const dev = new MemoryDevice({ size: 32 << 20 });
  const p = await Pool.create(reopenable(dev), { clusterSize: 65536 });
  await p.createVolume('img', 16 << 20);
  const v = await p.openVolume('img');
  await v.write(Buffer.alloc(65536, 7), 0);
  await v.close();
  await convertToTemplate(p, 'img', settings);
  return { pool: p, reopen: () => Pool.open(reopenable(dev)) };
}

describe('template settings in the catalog', () => {
  it('are kept with the template, survive a reopen, come along on a template copy, and leave the check clean', async () => {
    const { pool, reopen } = await withTemplate(vm);
    expect((await templateInfo(pool, 'img')).settings).toEqual(vm);
    await templateFrom(pool, { template: 'img' }, 'img2');
    await pool.close();
    const again = await reopen();
    expect((await templateInfo(again, 'img')).settings).toEqual(vm);
    expect((await templateInfo(again, 'img2')).settings).toEqual(vm);
    // A clone of an imported template is an ordinary linked clone.
    await cloneVolume(again, { template: 'img' }, 'c1');
    const c = await again.openVolume('c1');
    const b = Buffer.alloc(65536);
    await c.read(b, 0);
    expect(b.equals(Buffer.alloc(65536, 7))).toBe(true);
    await c.close();
    expect((await again.check()).problems).toEqual([]);
    await again.close();
  });

  it('are absent (null) for a template made without them, as in catalogs written before the field', async () => {
    const { pool } = await withTemplate();
    expect((await templateInfo(pool, 'img')).settings).toBeNull();
    expect(pool.catalogNow.templates[0]).not.toHaveProperty('settings');
    await templateFrom(pool, { template: 'img' }, 'img2');
    expect(pool.catalogNow.templates[1]).not.toHaveProperty('settings');
    await pool.close();
  });

  it('are refused when too big or not plain JSON, naming why', () => {
    expect(() => checkSettings({ note: 'x'.repeat(MAX_SETTINGS_BYTES) })).toThrow(`more than the ${MAX_SETTINGS_BYTES} a template keeps`);
    expect(() => checkSettings([1])).toThrow('must be a JSON object');
    expect(() => checkSettings({ cpus: Number.NaN })).toThrow('cpus is not a finite number');
    expect(() => checkSettings({ disks: [{ at: new Date() }] })).toThrow('disks[0].at is not a JSON value');
    let deep: Record<string, unknown> = {};
    for (let i = 0; i < 40; i++) deep = { d: deep };
    expect(() => checkSettings(deep)).toThrow(PoolError);
    expect(checkSettings(vm)).toEqual(vm);
  });
});
