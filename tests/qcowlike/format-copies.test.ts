import fs from 'node:fs';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { MemoryDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { INCOMPAT_COPIES, encodeHeader, planLayout } from '../../src/qcowlike/header.js';
import { initChecksums } from '../../src/qcowlike/checksum.js';
import { reopenable } from '../support/pool.js';

/**
 * A pool written by the build before header, root, catalog and journal
 * header had copies (8 MiB, 64 KiB clusters, volumes 'a' and 'b' of 1 MiB,
 * each with 200000 bytes of fill(seed) at offset 70000, checkpointed).
 */
const FIXTURE = new URL('../fixtures/pool-before-copies.img.gz', import.meta.url);

function fill(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

async function oldPool(): Promise<MemoryDevice> {
  const bytes = zlib.gunzipSync(fs.readFileSync(FIXTURE));
  const dev = new MemoryDevice({ size: bytes.length });
  await dev.write(bytes, 0);
  return dev;
}

async function expectData(pool: Pool): Promise<void> {
  for (const [name, seed] of [['a', 1], ['b', 2]] as const) {
    const vol = await pool.openVolume(name, { readOnly: true });
    const got = Buffer.alloc(1 << 20);
    await vol.read(got, 0);
    const want = Buffer.alloc(1 << 20);
    fill(200000, seed).copy(want, 70000);
    expect(got.equals(want), name).toBe(true);
    await vol.close();
  }
}

async function flip(dev: BlockDevice, at: number): Promise<void> {
  const b = Buffer.alloc(1);
  await dev.read(b, at);
  b[0]! ^= 0x5a;
  await dev.write(b, at);
}

describe('pools from before the copies', () => {
  it('open read-only and read-write, keep working, and stay in their format', async () => {
    const dev = await oldPool();
    const ro = await Pool.open(reopenable(dev), { readOnly: true });
    expect(ro.header.incompat & INCOMPAT_COPIES).toBe(0n);
    await expectData(ro);
    await ro.close();
    const pool = await Pool.open(reopenable(dev));
    await expectData(pool);
    expect((await pool.check()).problems).toEqual([]);
    await pool.createVolume('c', 1 << 20);
    const vol = await pool.openVolume('c');
    await vol.write(fill(5000, 3), 123);
    await vol.close();
    await pool.deleteVolume('b');
    await pool.close();
    const again = await Pool.open(reopenable(dev));
    expect(again.header.incompat & INCOMPAT_COPIES).toBe(0n);
    expect((await again.listVolumes()).map((v) => v.name).sort()).toEqual(['a', 'c']);
    expect((await again.check()).problems).toEqual([]);
    await again.close();
  });

  it('a damaged bitmap block of such a pool is rebuilt from the maps too', async () => {
    const dev = await oldPool();
    const probe = await Pool.open(reopenable(dev), { readOnly: true });
    const { bitmapStart, clusterSize: C, dataStart } = probe.header;
    await probe.close();
    await flip(dev, bitmapStart * C + Math.floor(dataStart / 8) + 1);
    const pool = await Pool.open(reopenable(dev));
    await expectData(pool);
    const report = await pool.check({ repair: true });
    expect(report.problems.some((p) => p.kind === 'bitmap' && p.hostOffset === bitmapStart * C && p.repaired)).toBe(true);
    expect(report.problems.filter((p) => !p.repaired)).toEqual([]);
    await pool.close();
    const again = await Pool.open(reopenable(dev));
    expect((await again.check()).problems).toEqual([]);
    await again.close();
  });

  it('check --repair gives such a pool its copies; from then on a flipped header, root or journal header byte costs nothing', async () => {
    const base = await oldPool();
    const pool = await Pool.open(reopenable(base));
    const report = await pool.check({ repair: true });
    expect(report.problems).toEqual([expect.objectContaining({ kind: 'header', repaired: true, message: expect.stringMatching(/added them \(copies region at offset \d+\)/) })]);
    const { copiesStart, clusterSize: C, journalStart } = pool.header;
    expect(pool.header.incompat & INCOMPAT_COPIES).toBe(INCOMPAT_COPIES);
    await pool.close();
    const upgraded = Buffer.alloc(base.size);
    await base.read(upgraded, 0);
    const again = await Pool.open(reopenable(base));
    expect((await again.check()).problems).toEqual([]);
    await again.close();
    for (const at of [20, C + 3, journalStart * C + 8, copiesStart * C + 3, (copiesStart + 1) * C + 8, 512 + 20]) {
      const dev = new MemoryDevice({ size: upgraded.length });
      await dev.write(upgraded, 0);
      await flip(dev, at);
      const p = await Pool.open(reopenable(dev));
      await expectData(p);
      const r = await p.check();
      expect(r.problems.filter((x) => !x.repaired), `flip at ${at}`).toEqual([]);
      expect(r.problems.length, `flip at ${at}`).toBe(1);
      await p.close();
    }
  });

  it('a sealed header in the last sector is taken only where its own geometry puts a copy', async () => {
    const dev = await oldPool();
    await initChecksums();
    // The header of a smaller pool (as in an image stored in a volume) lands in the device's last sector.
    const stray = planLayout(4 << 20, 65536);
    await dev.write(encodeHeader(stray), dev.size - 512);
    await flip(dev, 20);
    await expect(Pool.open(reopenable(dev))).rejects.toThrow(/pool header \(offset 0\) is damaged: checksum mismatch/);
  });
});
