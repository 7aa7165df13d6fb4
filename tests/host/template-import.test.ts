import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { streamSource } from '../../src/image/byte-source.js';
import { nameFromVm, importTemplate, type OpenedPackage, type PackageDisk } from '../../src/host/template-import.js';
import { poolTarget } from '../../src/host/template-targets.js';
import { Pool } from '../../src/qcowlike/index.js';
import { cloneVolume } from '../../src/snapshot/index.js';

const MiB = 1 << 20;

/** A disk whose bytes say which disk and which MiB they are, with a hole in the middle. */
function diskBytes(n: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let at = 0; at < size; at += MiB) if (at !== MiB) b.fill(n * 16 + at / MiB + 1, at, at + 4096);
  return b;
}

/** A package of raw disks read as streams, one after the other; `fail` throws after that many disks (a manifest mismatch, say). */
function fakePackage(disks: Buffer[], opts: { capacities?: number[]; fail?: number } = {}): OpenedPackage {
  return {
    name: 'app.ova',
    vmName: 'Web Server (prod)',
    capacities: opts.capacities ?? disks.map((d) => d.length),
    settingsFor: (names) => ({ name: 'Web Server (prod)', cpus: 2, disks: names.map((name) => ({ name })) }),
    eachDisk: async (onDisk: (d: PackageDisk) => Promise<void>) => {
      for (const [i, d] of disks.entries()) {
        if (i === opts.fail) throw new Error(`app.ova: disk${i + 1}.vmdk does not match its SHA256 in app.mf`);
        await onDisk({ index: i, file: `disk${i + 1}.img`, format: 'raw', source: streamSource(Readable.from([d]), `disk${i + 1}.img in app.ova`, d.length) });
      }
    },
    close: async () => undefined,
  };
}

async function newPool(): Promise<Pool> {
  return Pool.create(new MemoryDevice({ size: 64 * MiB }), { clusterSize: 65536 });
}

describe('template import into a pool', () => {
  it('makes one template per disk, the first with the settings, and a clone reads the disk', async () => {
    const pool = await newPool();
    const disks = [diskBytes(0, 4 * MiB), diskBytes(1, 2 * MiB)];
    const seen: number[] = [];
    const r = await importTemplate(fakePackage(disks), poolTarget(pool, { poolName: 'p' }), 'web', { update: (n) => seen.push(n) });
    expect(r.templates.map((t) => [t.name, t.size])).toEqual([
      ['web', 4 * MiB],
      ['web-disk2', 2 * MiB],
    ]);
    expect(r.templates[0]!.settings).toEqual({ name: 'Web Server (prod)', cpus: 2, disks: [{ name: 'web' }, { name: 'web-disk2' }] });
    expect(r.templates[1]!.settings).toBeNull();
    // The zero MiB was found and not written.
    expect(r.disks[0]!.dataBytes).toBe(3 * 4096);
    expect(seen.at(-1)).toBe(6 * MiB);
    expect(pool.catalogNow.volumes).toEqual([]);
    await cloneVolume(pool, { template: 'web-disk2' }, 'c');
    const c = await pool.openVolume('c');
    const back = Buffer.alloc(2 * MiB);
    await c.read(back, 0);
    expect(back.equals(disks[1]!)).toBe(true);
    await c.close();
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
  });

  it('leaves nothing behind when the package turns out damaged after a disk, or a disk is bigger than declared', async () => {
    const pool = await newPool();
    const target = poolTarget(pool, { poolName: 'p' });
    const disks = [diskBytes(0, 2 * MiB), diskBytes(1, 2 * MiB)];
    await expect(importTemplate(fakePackage(disks, { fail: 1 }), target, 'web', { update: () => undefined })).rejects.toThrow('disk2.vmdk does not match its SHA256');
    expect([pool.catalogNow.volumes, pool.catalogNow.templates]).toEqual([[], []]);
    await expect(importTemplate(fakePackage(disks, { capacities: [2 * MiB, MiB] }), target, 'web', { update: () => undefined })).rejects.toThrow(
      'disk2.img in app.ova: is 2M (2097152 bytes), larger than the 1M (1048576 bytes) its descriptor declares',
    );
    expect([pool.catalogNow.volumes, pool.catalogNow.templates]).toEqual([[], []]);
    const stop = new AbortController();
    stop.abort();
    await expect(importTemplate(fakePackage(disks), target, 'web', { update: () => undefined }, stop.signal)).rejects.toThrow('interrupted');
    expect([pool.catalogNow.volumes, pool.catalogNow.templates]).toEqual([[], []]);
    expect((await pool.check()).problems).toEqual([]);
    // A name taken is refused before anything is made.
    await pool.createVolume('web-disk2', MiB);
    await expect(importTemplate(fakePackage(disks), target, 'web', { update: () => undefined })).rejects.toThrow("'web-disk2' already exists");
    expect(pool.catalogNow.templates).toEqual([]);
    await pool.deleteVolume('web-disk2');
    // One that a killed import left, marked incomplete, is made anew.
    await pool.createVolume('web', MiB, { incomplete: true });
    const r = await importTemplate(fakePackage(disks), target, 'web', { update: () => undefined });
    expect(r.templates.map((t) => [t.name, t.size])).toEqual([
      ['web', 2 * MiB],
      ['web-disk2', 2 * MiB],
    ]);
    expect(pool.catalogNow.volumes).toEqual([]);
    await pool.close();
  });

  it('names a template after its VM when no name is given', () => {
    expect(nameFromVm('Web Server (prod)')).toBe('Web-Server-prod');
    expect(nameFromVm('ubuntu-22.04.ova')).toBe('ubuntu-22.04.ova');
    expect(nameFromVm('Ünïcode  VM')).toBe('Unicode-VM');
    expect(nameFromVm('***')).toBe('template');
    expect(nameFromVm('x'.repeat(100)).length).toBeLessThanOrEqual(56);
  });
});
