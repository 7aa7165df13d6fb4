import { describe, expect, it } from 'vitest';
import { MemoryDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { initChecksums } from '../../src/qcowlike/checksum.js';
import { COPY_POINTER_AT, readPointer, type Catalog } from '../../src/qcowlike/catalog.js';
import { readL1 } from '../../src/qcowlike/geometry.js';
import { decodeHeader, type PoolHeader } from '../../src/qcowlike/header.js';
import { lastSector } from '../../src/qcowlike/header-copies.js';
import type { CheckReport } from '../../src/qcowlike/types.js';
import { pattern } from '../support/blockdev-contract.js';
import { reopenable } from '../support/pool.js';

/**
 * One flipped byte in each metadata region in turn, on a cleanly closed pool
 * and on one stopped with a non-empty journal: the pool still opens, every
 * volume the damaged block does not map exports exactly, check names the
 * place, and check --repair fixes it or holds in quarantine what the damaged
 * table may reference, losing nothing of what still reads.
 */
const C = 4096;
const DEVICE = 16 << 20;
/** Virtual bytes one L2 table maps at this cluster size: 204 entries of 20 bytes. */
const SPAN = Math.floor((C - 16) / 20) * C;

type Model = Map<string, Buffer>;

async function copyOf(dev: BlockDevice): Promise<MemoryDevice> {
  const bytes = Buffer.alloc(dev.size);
  await dev.read(bytes, 0);
  const out = new MemoryDevice({ size: dev.size });
  await out.write(bytes, 0);
  return out;
}

async function write(pool: Pool, model: Model, name: string, at: number, data: Buffer): Promise<void> {
  const vol = await pool.openVolume(name);
  await vol.write(data, at);
  await vol.flush();
  await vol.close();
  data.copy(model.get(name)!, at);
}

/** A pool with three volumes (one spanning three L2 tables), closed cleanly; and a copy of it stopped after more flushed writes and a new volume. */
async function pools(): Promise<{ clean: { dev: MemoryDevice; model: Model }; crashed: { dev: MemoryDevice; model: Model } }> {
  const dev = new MemoryDevice({ size: DEVICE });
  const model: Model = new Map();
  const pool = await Pool.create(reopenable(dev), { clusterSize: C });
  for (const [name, size] of [['a', 2 << 20], ['b', 1 << 20], ['c', 1 << 20]] as const) {
    await pool.createVolume(name, size);
    model.set(name, Buffer.alloc(size));
  }
  await write(pool, model, 'a', 0, pattern(2 << 20, 1));
  await write(pool, model, 'b', 100_000, pattern(300_000, 2));
  await write(pool, model, 'c', 10_000, pattern(40_000, 3));
  await write(pool, model, 'c', SPAN + 5000, pattern(50_000, 4));
  await pool.close();
  const clean = { dev: await copyOf(dev), model: new Map([...model].map(([k, v]) => [k, Buffer.from(v)])) };

  const again = await Pool.open(reopenable(dev));
  await write(again, model, 'a', SPAN - 3000, pattern(9000, 5));
  await write(again, model, 'b', 20_000, pattern(30_000, 6));
  await write(again, model, 'c', SPAN + 150_000, pattern(20_000, 7));
  await again.createVolume('d', 512 << 10);
  model.set('d', Buffer.alloc(512 << 10));
  await write(again, model, 'd', 4096, pattern(60_000, 8));
  await again.flush();
  // Power lost here: the journal holds every change since the reopen; nothing is checkpointed.
  return { clean, crashed: { dev: await copyOf(dev), model } };
}

interface Region {
  name: string;
  /** Byte flipped. */
  at: number;
  /** Place check must name (host offset of the block or copy). */
  place: number;
  /** The volume and virtual range the damaged block maps, if it maps data. */
  maps?: { volume: string; from: number; to: number };
}

async function regions(dev: BlockDevice): Promise<Region[]> {
  const raw = Buffer.alloc(512);
  await dev.read(raw, 0);
  const h: PoolHeader = decodeHeader(raw, 'x', dev.size);
  const root = Buffer.alloc(C);
  await dev.read(root, C);
  const ptr = readPointer(root);
  const copy = readPointer(root, COPY_POINTER_AT);
  const json = Buffer.alloc(ptr.bytes);
  await dev.read(json, ptr.start * C);
  const catalog = JSON.parse(json.toString('utf8')) as Catalog;
  const out: Region[] = [
    { name: 'header', at: 20, place: 0 },
    { name: 'header copy in cluster 0', at: 512 + 20, place: 512 },
    { name: 'header copy at the device end', at: lastSector(dev.size) + 20, place: lastSector(dev.size) },
    { name: 'root block', at: C + 3, place: C },
    { name: 'root copy', at: h.copiesStart * C + 3, place: h.copiesStart * C },
    { name: 'journal header', at: h.journalStart * C + 8, place: h.journalStart * C },
    { name: 'journal header copy', at: (h.copiesStart + 1) * C + 8, place: (h.copiesStart + 1) * C },
    { name: 'bitmap block', at: h.bitmapStart * C + Math.floor(h.dataStart / 8) + 2, place: h.bitmapStart * C },
    { name: 'catalog', at: ptr.start * C + 10, place: ptr.start * C },
    { name: 'catalog copy', at: copy.start * C + 10, place: copy.start * C },
    { name: 'double-write head', at: h.dwStart * C + 30, place: h.dwStart * C },
  ];
  for (const v of catalog.volumes) {
    const layer = catalog.layers.find((l) => l.id === v.layer)!;
    out.push({ name: `L1 of ${v.name}`, at: layer.l1Start * C + 3, place: layer.l1Start * C, maps: { volume: v.name, from: 0, to: v.size } });
    const l1 = Buffer.alloc(C);
    await dev.read(l1, layer.l1Start * C);
    for (let i = 0; i * SPAN < v.size; i++) {
      const l2c = readL1(l1, i);
      if (l2c !== 0) out.push({ name: `L2 ${i} of ${v.name}`, at: l2c * C + 17, place: l2c * C, maps: { volume: v.name, from: i * SPAN, to: Math.min(v.size, (i + 1) * SPAN) } });
    }
  }
  return out;
}

async function flip(dev: BlockDevice, at: number): Promise<void> {
  const b = Buffer.alloc(1);
  await dev.read(b, at);
  b[0]! ^= 0x5a;
  await dev.write(b, at);
}

/** Every volume reads back as the model, except the range the damaged block maps, which fails naming the block. */
async function expectVolumes(pool: Pool, model: Model, r: Region, label: string): Promise<void> {
  for (const [name, want] of model) {
    const vol = await pool.openVolume(name, { readOnly: true });
    for (let at = 0; at < want.length; at += SPAN) {
      const got = Buffer.alloc(Math.min(SPAN, want.length - at));
      const hit = r.maps && r.maps.volume === name && at < r.maps.to && at + got.length > r.maps.from;
      if (hit) {
        await expect(vol.read(got, at), `${label}: ${name}@${at}`).rejects.toThrow(new RegExp(`host offset ${r.place}`));
      } else {
        await vol.read(got, at);
        expect(got.equals(want.subarray(at, at + got.length)), `${label}: ${name}@${at}`).toBe(true);
      }
    }
    await vol.close();
  }
}

function open(report: CheckReport): string[] {
  return report.problems.filter((p) => !p.repaired).map((p) => `${p.kind} ${p.message}`);
}

async function sweep(base: { dev: MemoryDevice; model: Model }, crashed: boolean): Promise<void> {
  await initChecksums();
  // Where the blocks are once the journal is replayed; those still only in the journal (new tables, whose
  // home holds nothing yet) are rebuilt whole by replay, so a flip there is no damage and is left out.
  const replayed = await copyOf(base.dev);
  await (await Pool.open(reopenable(replayed))).close();
  const all: Region[] = [];
  for (const r of await regions(replayed)) {
    const block = Buffer.alloc(512);
    await base.dev.read(block, r.place);
    if (block.some((b) => b !== 0)) all.push(r);
  }
  expect(all.filter((r) => r.name.startsWith('L2')).length).toBeGreaterThanOrEqual(6);
  expect(all.filter((r) => r.name.startsWith('L1')).length).toBeGreaterThanOrEqual(3);
  for (const r of all) {
    const label = `${crashed ? 'crashed' : 'clean'}, ${r.name}`;
    const dev = await copyOf(base.dev);
    await flip(dev, r.at);
    if (!crashed) {
      const ro = await Pool.open(reopenable(dev), { readOnly: true });
      await expectVolumes(ro, base.model, r, `${label} (read-only)`);
      await ro.close();
    }
    const pool = await Pool.open(reopenable(dev));
    if (crashed) expect(pool.replayed, label).toBeGreaterThan(0);
    await expectVolumes(pool, base.model, r, label);
    const report = await pool.check();
    // Recovery's checkpoint writes a new double-write head over a damaged one: nothing is left to report.
    const rewritten = crashed && r.name === 'double-write head';
    expect(report.problems.some((p) => p.hostOffset === r.place), `${label}: check names offset ${r.place}: ${JSON.stringify(report.problems)}`).toBe(!rewritten);
    const used = pool.alloc.usedClusters;
    const repaired = await pool.check({ repair: true });
    if (r.maps) {
      expect(repaired.leakedClusters, label).toBe(0);
      // Nothing a damaged table may reference is freed: it is held, and said so.
      expect(pool.alloc.usedClusters, label).toBe(used);
      expect(repaired.quarantinedClusters, label).toBeGreaterThan(0);
      expect(repaired.problems.some((p) => p.kind === 'quarantine' && /clusters? held in quarantine because (L1 block|L2 table|damaged)/.test(p.message)), label).toBe(true);
      for (const p of repaired.problems) for (const c of p.clusters ?? []) expect(pool.alloc.isUsed(c), label).toBe(true);
    } else {
      expect(open(repaired), label).toEqual([]);
    }
    await pool.close();
    const after = await Pool.open(reopenable(dev));
    await expectVolumes(after, base.model, r, `${label}, after repair`);
    const last = await after.check();
    if (!r.maps) expect(last.problems, label).toEqual([]);
    else expect(open(last).every((m) => /^(checksum|quarantine|journal) /.test(m)), `${label}: ${open(last).join('; ')}`).toBe(true);
    await after.close();
  }
}

describe('one damaged metadata block costs only what it maps', () => {
  it('every region of a cleanly closed pool, and of one stopped with a non-empty journal', async () => {
    const { clean, crashed } = await pools();
    await sweep(clean, false);
    await sweep(crashed, true);
  }, 120_000);
});
