import { describe, expect, it } from 'vitest';
import { MemoryDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { ChecksumError, Pool, PoolError } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { findOnDevice, reopenable } from '../support/pool.js';

const C = 65536;

async function poolWithData(): Promise<{ dev: MemoryDevice; data: Buffer }> {
  const dev = new MemoryDevice({ size: 16 << 20 });
  const pool = await Pool.create(reopenable(dev), { clusterSize: C });
  await pool.createVolume('vm1', 4 << 20);
  const vol = await pool.openVolume('vm1');
  const data = pattern(3 * C, 99);
  await vol.write(data, 5 * C);
  await vol.close();
  await pool.close();
  return { dev, data };
}

async function flip(dev: BlockDevice, offset: number): Promise<void> {
  const b = Buffer.alloc(1);
  await dev.read(b, offset);
  b[0] ^= 0x5a;
  await dev.write(b, offset);
}

/** Host offset of the last block whose trailer says `type` (a 4-letter tag): the home copy, past the double-write area. */
async function findBlock(dev: BlockDevice, tag: string): Promise<number> {
  const trailer = Buffer.alloc(4);
  for (let c = dev.size / C - 1; c >= 0; c--) {
    await dev.read(trailer, c * C + C - 16);
    if (trailer.toString('latin1') === tag) return c * C;
  }
  throw new Error(`no ${tag} block`);
}

describe('corruption is reported with its place, never returned as data', () => {
  it('a flipped data byte fails the read with the volume, virtual and host offsets; check reports it', async () => {
    const { dev, data } = await poolWithData();
    const host = await findOnDevice(dev, data.subarray(C, C + 64));
    expect(host).toBeGreaterThan(0);
    await flip(dev, host + 100);
    const pool = await Pool.open(reopenable(dev));
    const vol = await pool.openVolume('vm1');
    const err = await vol.read(Buffer.alloc(4096), 6 * C).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ChecksumError);
    expect(String((err as Error).message)).toMatch(new RegExp(`volume 'vm1' at virtual offset ${6 * C}.*host offset ${host}`));
    // Whole clusters, runs of sub-clusters and reads across clusters (each taking a different read path) all name the same place.
    const place = new RegExp(`volume 'vm1' at virtual offset ${6 * C}.*host offset ${host}`);
    for (const [len, at] of [[4096, 6 * C], [C, 6 * C], [2 * 4096, 6 * C], [2 * C, 5 * C + 4096], [100, 6 * C + 50]] as const) {
      await expect(vol.read(Buffer.alloc(len), at)).rejects.toThrow(place);
    }
    // The neighbouring sub-cluster is intact and still reads.
    const ok = Buffer.alloc(4096);
    await vol.read(ok, 6 * C + 4096);
    expect(ok.equals(data.subarray(C + 4096, C + 8192))).toBe(true);
    await vol.close();
    const report = await pool.check();
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]).toMatchObject({ kind: 'checksum', volume: 'vm1', virtualOffset: 6 * C, hostOffset: host, repaired: false });
    expect(report.corruptBlocks).toBe(1);
  });

  it('a damaged L2 table fails reads through it and check names the block', async () => {
    const { dev } = await poolWithData();
    const at = await findBlock(dev, 'L2  ');
    await flip(dev, at + 17);
    const pool = await Pool.open(reopenable(dev));
    const vol = await pool.openVolume('vm1');
    await expect(vol.read(Buffer.alloc(4096), 5 * C)).rejects.toThrow(new RegExp(`L2 table block.*checksum mismatch.*host offset ${at}`));
    await vol.close();
    const report = await pool.check();
    expect(report.problems.some((p) => p.kind === 'checksum' && p.hostOffset === at && /L2 table/.test(p.message))).toBe(true);
  });

  it('a damaged L1 table is reported by check with its place', async () => {
    const { dev } = await poolWithData();
    const at = await findBlock(dev, 'L1  ');
    await flip(dev, at + 3);
    const pool = await Pool.open(reopenable(dev));
    const report = await pool.check();
    expect(report.problems.some((p) => p.kind === 'checksum' && p.hostOffset === at && /L1 block/.test(p.message))).toBe(true);
  });

  it('a header damaged in every copy gives a clear message, not a stack trace', async () => {
    const { dev } = await poolWithData();
    for (const at of [20, 512 + 20, dev.size - 512 + 20]) await flip(dev, at);
    await expect(Pool.open(reopenable(dev))).rejects.toThrow(/pool header \(offset 0\) is damaged: checksum mismatch/);
    await expect(Pool.open(new MemoryDevice({ size: 1 << 20 }))).rejects.toThrow(/is not a Strata pool/);
  });

  it('a header with an unknown incompatible feature is refused', async () => {
    const { dev } = await poolWithData();
    const h = Buffer.alloc(512);
    await dev.read(h, 0);
    h.writeBigUInt64LE(h.readBigUInt64LE(16) | (1n << 40n), 16);
    const { metaChecksum, initChecksums } = await import('../../src/qcowlike/checksum.js');
    await initChecksums();
    h.writeBigUInt64LE(metaChecksum(h.subarray(0, 504)), 504);
    await dev.write(h, 0);
    await expect(Pool.open(reopenable(dev))).rejects.toThrow(/features this Strata does not know.*0x10000000000/);
  });

  it('a catalog, bitmap or journal header damaged together with its copy is refused at open with its place', async () => {
    for (const [what, locate, message] of [
      ['catalog', async (d: BlockDevice) => {
        // The root block (cluster 1) points at the live catalog (offset 0) and its copy (offset 24).
        const ptr = Buffer.alloc(32);
        await d.read(ptr, C);
        return [Number(ptr.readBigUInt64LE(0)) * C, Number(ptr.readBigUInt64LE(24)) * C];
      }, /catalog checksum mismatch/],
      ['journal', async (d: BlockDevice) => [2 * C, d.size - 2 * C + C], /journal header at offset 131072 and its copy at offset \d+ are damaged/],
    ] as const) {
      const { dev } = await poolWithData();
      for (const at of await locate(dev)) await flip(dev, at + 8);
      await expect(Pool.open(reopenable(dev)), what).rejects.toThrow(message);
    }
  });

  it('a bitmap block that calls a used cluster free: the pool opens, the block is rebuilt from the maps, and new writes go elsewhere', async () => {
    const { dev, data } = await poolWithData();
    const at = await findBlock(dev, 'BMAP');
    // Clear exactly the bit of a cluster that holds vm1's data.
    const host = Math.floor((await findOnDevice(dev, data.subarray(0, 64))) / C);
    const b = Buffer.alloc(1);
    await dev.read(b, at + (host >> 3));
    b[0]! &= ~(1 << (host & 7));
    await dev.write(b, at + (host >> 3));
    const pool = await Pool.open(reopenable(dev));
    // Fill the pool's free space: nothing may land on the cluster the damaged block called free.
    await pool.createVolume('fill', 8 << 20);
    const fill = await pool.openVolume('fill');
    await fill.write(Buffer.alloc(8 << 20, 0xab), 0);
    await fill.close();
    const vol = await pool.openVolume('vm1');
    const got = Buffer.alloc(data.length);
    await vol.read(got, 5 * C);
    expect(got.equals(data)).toBe(true);
    await vol.close();
    const report = await pool.check();
    expect(report.problems).toEqual([expect.objectContaining({ kind: 'bitmap', hostOffset: at, repaired: true, message: expect.stringMatching(/rebuilt from the maps \(1 cluster in use that it called free\)/) })]);
    await pool.close();
    expect((await (await Pool.open(reopenable(dev))).check()).problems).toEqual([]);
  });

  it('a flipped bitmap byte that marks free clusters used: rebuilt, and check --repair frees the bits the flip set', async () => {
    const { dev } = await poolWithData();
    const at = await findBlock(dev, 'BMAP');
    await flip(dev, at + 8);
    const pool = await Pool.open(reopenable(dev));
    const report = await pool.check({ repair: true });
    expect(report.problems.find((p) => p.hostOffset === at)).toMatchObject({ kind: 'bitmap', repaired: true });
    expect(report.problems.filter((p) => !p.repaired)).toEqual([]);
    await pool.close();
    expect((await (await Pool.open(reopenable(dev))).check()).problems).toEqual([]);
  });

  it('a flipped root byte: the pool opens from the root\'s copy and rewrites the root', async () => {
    const { dev, data } = await poolWithData();
    await flip(dev, C + 2);
    const pool = await Pool.open(reopenable(dev));
    const vol = await pool.openVolume('vm1');
    const got = Buffer.alloc(data.length);
    await vol.read(got, 5 * C);
    expect(got.equals(data)).toBe(true);
    await vol.close();
    const report = await pool.check();
    expect(report.problems.find((p) => p.hostOffset === C)).toMatchObject({ repaired: true });
    await pool.close();
    expect((await (await Pool.open(reopenable(dev))).check()).problems).toEqual([]);
  });

  it('check --repair holds what a damaged L2 table maps in quarantine instead of freeing it', async () => {
    const { dev } = await poolWithData();
    const at = await findBlock(dev, 'L2  ');
    await flip(dev, at + 17);
    const pool = await Pool.open(reopenable(dev));
    expect((await pool.listVolumes()).map((v) => v.name)).toEqual(['vm1']);
    const used = pool.alloc.usedClusters;
    const report = await pool.check({ repair: true });
    expect(pool.alloc.usedClusters).toBe(used);
    expect(report.problems.filter((p) => p.kind === 'leak')).toEqual([]);
    const held = report.problems.find((p) => p.kind === 'quarantine');
    expect(held?.message).toMatch(new RegExp(`^3 clusters held in quarantine because L2 table at offset ${at} .*is damaged`));
    for (const c of held?.clusters ?? []) expect(pool.alloc.isUsed(c)).toBe(true);
    await pool.close();
  });

  it('a damaged L2 table with journaled changes does not stop the open; the rest of the pool reads', async () => {
    const { dev, data } = await poolWithData();
    const pool = await Pool.open(reopenable(dev));
    await pool.createVolume('vm2', 1 << 20);
    const vol = await pool.openVolume('vm1');
    await vol.write(Buffer.alloc(4096, 7), 5 * C);
    await vol.flush();
    await vol.close();
    const other = await pool.openVolume('vm2');
    await other.write(data.subarray(0, C), 0);
    await other.flush();
    await other.close();
    // Power lost here, with the journal holding both volumes' changes; then the old home of vm1's table is damaged.
    const at = await findBlock(dev, 'L2  ');
    await flip(dev, at + 17);
    const again = await Pool.open(reopenable(dev));
    expect(again.replayed).toBeGreaterThan(0);
    const v2 = await again.openVolume('vm2');
    const got = Buffer.alloc(C);
    await v2.read(got, 0);
    expect(got.equals(data.subarray(0, C))).toBe(true);
    await v2.close();
    const v1 = await again.openVolume('vm1');
    await expect(v1.read(Buffer.alloc(4096), 5 * C)).rejects.toThrow(new RegExp(`host offset ${at}`));
    await v1.close();
    const report = await again.check();
    expect(report.problems.some((p) => p.kind === 'journal' && p.hostOffset === at)).toBe(true);
    expect(report.problems.some((p) => p.kind === 'checksum' && p.hostOffset === at)).toBe(true);
  });

  it('a damaged L1 block costs only the part of the volume it maps', async () => {
    // 4 KiB clusters: one L1 block maps 510 tables of 204 clusters, 406 MiB; this volume needs two.
    const dev = new MemoryDevice({ size: 16 << 20 });
    const pool = await Pool.create(reopenable(dev), { clusterSize: 4096 });
    await pool.createVolume('big', 420 << 20);
    const vol = await pool.openVolume('big');
    const data = pattern(8192, 5);
    await vol.write(data, 0);
    await vol.write(data, 410 << 20);
    await vol.close();
    await pool.close();
    // The root (cluster 1) points at the catalog, which names the layer's L1 run.
    const root = Buffer.alloc(16);
    await dev.read(root, 4096);
    const json = Buffer.alloc(root.readUInt32LE(12));
    await dev.read(json, Number(root.readBigUInt64LE(0)) * 4096);
    const { l1Start, l1Blocks } = (JSON.parse(json.toString('utf8')) as { layers: Array<{ l1Start: number; l1Blocks: number }> }).layers[0]!;
    expect(l1Blocks).toBe(2);
    await flip(dev, l1Start * 4096 + 3);
    const again = await Pool.open(reopenable(dev));
    const v = await again.openVolume('big');
    const got = Buffer.alloc(8192);
    await v.read(got, 410 << 20);
    expect(got.equals(data)).toBe(true);
    await expect(v.read(got, 0)).rejects.toThrow(new RegExp(`L1 table block.*which maps virtual offsets 0-\\d+ of layer 1 \\(host offset ${l1Start * 4096}\\)`));
    await v.close();
    const report = await again.check({ repair: true });
    expect(report.problems.find((p) => p.kind === 'quarantine')?.message).toMatch(new RegExp(`^\\d+ clusters? held in quarantine because L1 block 0 of volume 'big' \\(layer 1\\) at offset ${l1Start * 4096} is damaged`));
    await again.close();
  });

  it('check finds and repairs a leaked cluster and a used cluster marked free', async () => {
    const { dev } = await poolWithData();
    const pool = await Pool.open(reopenable(dev));
    const leaked = pool.alloc.allocate();
    await pool.store.checkpoint();
    const report = await pool.check();
    expect(report.leakedClusters).toBe(1);
    expect(report.problems[0]).toMatchObject({ kind: 'leak', hostOffset: leaked * C, repaired: false });
    const fixed = await pool.check({ repair: true });
    expect(fixed.repaired).toBe(1);
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
    expect(PoolError).toBeDefined();
  });
});
