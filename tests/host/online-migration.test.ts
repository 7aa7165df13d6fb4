import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { CrashSimulator, FaultyDevice, MemoryDevice, PassThroughDevice, Rng, type BlockDevice, type WriteOptions } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { MovableDevice } from '../../src/migrate/movable-device.js';
import { MigrationRecords } from '../../src/host/migration-records.js';
import { settleMigration } from '../../src/host/migration-recovery.js';
import { runMigration, type MigrationEnds } from '../../src/host/online-migration.js';
import type { JobControl } from '../../src/host/jobs.js';
import { cloneVolume, createSnapshots, openFrozen, templateFrom } from '../../src/snapshot/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns, scratchDir } from '../support/scratch.js';

const SIZE = 2 << 20;
const BLOCK = 4096;
const opts = { cacheBytes: 16 * 4096, journalBytes: 128 * 1024 };
const scratch = scratchDir('online-migration');
afterAll(() => scratch.cleanup());

/** Lets the copy and the guest take turns (memory devices answer without yielding). */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

async function setup(home: string, srcDev: BlockDevice, dstDev: BlockDevice, seed: number): Promise<{ ends: MigrationEnds; model: Map<number, Buffer> }> {
  const source = await Pool.create(srcDev, { clusterSize: 4096, ...opts });
  const target = await Pool.create(dstDev, { clusterSize: 4096, ...opts });
  await source.createVolume('vm', SIZE);
  const vol = await source.openVolume('vm');
  const model = new Map<number, Buffer>();
  const rng = new Rng(seed);
  for (let k = 0; k < 120; k++) {
    const at = rng.below(SIZE / BLOCK) * BLOCK;
    const data = pattern(BLOCK, seed + k);
    await vol.write(data, at);
    model.set(at, data);
  }
  await vol.flush();
  return { ends: { home, source: { name: 'a', pool: source }, target: { name: 'b', pool: target }, held: { device: new MovableDevice(vol), exportName: 'vm' } }, model };
}

/** A guest that writes a block, flushes, and records it once the flush is back; `inflight` is the write not yet flushed. */
function guest(dev: BlockDevice, model: Map<number, Buffer>, seed: number, count: number): { done: Promise<void>; inflight: { at: number; data: Buffer } | undefined } {
  const g: { done: Promise<void>; inflight: { at: number; data: Buffer } | undefined } = { done: Promise.resolve(), inflight: undefined };
  const rng = new Rng(seed ^ 0x5eed);
  g.done = (async () => {
    for (let k = 0; k < count; k++) {
      await turn();
      const at = rng.below(SIZE / BLOCK) * BLOCK;
      const data = pattern(BLOCK, seed * 1000 + k);
      g.inflight = { at, data };
      await dev.write(data, at);
      await dev.flush();
      model.set(at, data);
      g.inflight = undefined;
    }
  })();
  return g;
}

async function contents(pool: Pool, name: string): Promise<Buffer> {
  const h = await pool.openVolume(name, { readOnly: true });
  const b = Buffer.alloc(h.size);
  await h.read(b, 0);
  await h.close();
  return b;
}

/** Every flushed block reads as the model says; the one in flight at a crash, sector by sector, as either value (an unflushed write may be torn). */
function agrees(bytes: Buffer, model: Map<number, Buffer>, inflight?: { at: number; data: Buffer }): boolean {
  for (let at = 0; at < SIZE; at += BLOCK) {
    const got = bytes.subarray(at, at + BLOCK);
    const want = model.get(at) ?? Buffer.alloc(BLOCK);
    if (got.equals(want)) continue;
    if (!inflight || inflight.at !== at) return false;
    for (let s = 0; s < BLOCK; s += 512) {
      const sector = got.subarray(s, s + 512);
      if (!sector.equals(want.subarray(s, s + 512)) && !sector.equals(inflight.data.subarray(s, s + 512))) return false;
    }
  }
  return true;
}

function jobControl(signal: AbortSignal): JobControl {
  return { id: 1, signal, progress: () => undefined };
}

/** Snapshots a (and b, after more writes) of `vm`, returning what each reads; with `clone`, vm is first remade as a linked clone of a template. */
async function history(ends: MigrationEnds, model: Map<number, Buffer>, clone: boolean): Promise<Map<string, Buffer>> {
  const pool = ends.source.pool;
  const snaps = new Map<string, Buffer>();
  if (clone) {
    const dev = ends.held.device;
    await dev.flush();
    await dev.close();
    await templateFrom(pool, { volume: 'vm' }, 'gold');
    await pool.deleteVolume('vm');
    await cloneVolume(pool, { template: 'gold' }, 'vm');
    (ends.held as { device: MovableDevice }).device = new MovableDevice(await pool.openVolume('vm'));
  }
  for (const name of ['a', 'b']) {
    for (let k = 0; k < 10; k++) {
      const at = ((k * 37 + name.charCodeAt(0)) % (SIZE / BLOCK)) * BLOCK;
      const data = pattern(BLOCK, k + name.charCodeAt(0) * 100);
      await ends.held.device.write(data, at);
      model.set(at, data);
    }
    await createSnapshots(pool, [{ volume: 'vm', snapshot: name }]);
    snaps.set(name, await contents(pool, 'vm'));
  }
  return snaps;
}

async function snapshotBytes(pool: Pool, volume: string, snapshot: string): Promise<Buffer> {
  const h = await openFrozen(pool, { volume, snapshot });
  const b = Buffer.alloc(h.size);
  await h.read(b, 0);
  await h.close();
  return b;
}

describe('hot migration between pools', () => {
  it.each([false, true])('carries the snapshots (and, for a linked clone, its template) and mirrors what changed since (clone: %s)', async (clone) => {
    const { ends, model } = await setup(scratch.dir, new MemoryDevice({ size: 32 << 20 }), new MemoryDevice({ size: 32 << 20 }), 9);
    const snaps = await history(ends, model, clone);
    const g = guest(ends.held.device, model, 9, 40);
    await runMigration(ends, { volume: 'vm', targetPool: 'b', targetVolume: 'vm' }, undefined);
    await g.done;
    const t = ends.target.pool;
    expect(t.catalogNow.snapshots.filter((x) => x.volume === 'vm').map((x) => x.name)).toEqual(['a', 'b']);
    for (const [name, bytes] of snaps) expect((await snapshotBytes(t, 'vm', name)).equals(bytes), `@${name}`).toBe(true);
    expect(agrees(await contents(t, 'vm'), model)).toBe(true);
    if (clone) expect(t.catalogNow.templates.map((x) => x.name)).toEqual(['gold']);
    expect(ends.source.pool.catalogNow.snapshots).toEqual([]);
    expect(ends.source.pool.volumeRecords()).toEqual([]);
    for (const p of [ends.source.pool, t]) expect((await p.check()).problems).toEqual([]);
    await ends.held.device.close();
  });

  it('converges however the guest writes race the copy: after the pivot the export is on the target, which reads as the model, and the source is gone', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer(), fc.integer({ min: 1, max: 80 }), async (seed, writes) => {
        const { ends, model } = await setup(scratch.dir, new MemoryDevice({ size: 16 << 20 }), new MemoryDevice({ size: 16 << 20 }), seed);
        const g = guest(ends.held.device, model, seed, writes);
        const result = await runMigration(ends, { volume: 'vm', targetPool: 'b', targetVolume: 'vm2' }, undefined);
        await g.done;
        expect(result.target).toBe('b/vm2');
        expect(ends.held.device.volume.name).toContain('vm2');
        expect(ends.source.pool.volumeRecords()).toEqual([]);
        expect(agrees(await contents(ends.target.pool, 'vm2'), model)).toBe(true);
        // Writes after the pivot land on the target.
        await ends.held.device.write(pattern(BLOCK, 7), 0);
        model.set(0, pattern(BLOCK, 7));
        await ends.held.device.flush();
        expect(agrees(await contents(ends.target.pool, 'vm2'), model)).toBe(true);
        expect((await ends.source.pool.check()).problems).toEqual([]);
        expect((await ends.target.pool.check()).problems).toEqual([]);
        expect(new MigrationRecords(scratch.dir).list()).toEqual([]);
        await ends.held.device.close();
      }),
      { numRuns: propertyRuns(30, 8) },
    );
  });

  it('leaves the source as it was when cancelled before the pivot, and takes the target away', async () => {
    const { ends, model } = await setup(scratch.dir, new MemoryDevice({ size: 16 << 20 }), new MemoryDevice({ size: 16 << 20 }), 3);
    const ac = new AbortController();
    const g = guest(ends.held.device, model, 3, 30);
    const run = runMigration(ends, { volume: 'vm', targetPool: 'b', targetVolume: 'vm2' }, undefined, jobControl(ac.signal), { beforePivot: async () => ac.abort(new Error('job 1 was cancelled')) });
    await expect(run).rejects.toThrow(/cancelled/);
    await g.done;
    expect(ends.held.device.volume.name).not.toContain('vm2');
    expect(ends.target.pool.volumeRecords()).toEqual([]);
    expect(agrees(await contents(ends.source.pool, 'vm'), model)).toBe(true);
    expect((await ends.target.pool.check()).problems).toEqual([]);
    expect(new MigrationRecords(scratch.dir).list()).toEqual([]);
  });

  it('leaves alone a volume that took the target name meanwhile', async () => {
    const { ends } = await setup(scratch.dir, new MemoryDevice({ size: 16 << 20 }), new MemoryDevice({ size: 16 << 20 }), 5);
    await ends.target.pool.createVolume('vm2', 1 << 20);
    await expect(runMigration(ends, { volume: 'vm', targetPool: 'b', targetVolume: 'vm2' }, undefined)).rejects.toThrow(/already exists/);
    expect(ends.target.pool.volumeRecords().map((v) => [v.name, v.size])).toEqual([['vm2', 1 << 20]]);
    expect(ends.source.pool.volumeRecords().map((v) => v.name)).toEqual(['vm']);
    expect(new MigrationRecords(scratch.dir).list()).toEqual([]);
  });

  it('gives up without a guest error when the target pool fills up, the source whole', async () => {
    const faulty = new FaultyDevice(new MemoryDevice({ size: 16 << 20 }));
    const { ends, model } = await setup(scratch.dir, new MemoryDevice({ size: 16 << 20 }), faulty, 4);
    faulty.addRule({ ops: ['write'], after: 40, error: 'ENOSPC' });
    const g = guest(ends.held.device, model, 4, 40);
    await expect(runMigration(ends, { volume: 'vm', targetPool: 'b', targetVolume: 'vm2' }, undefined)).rejects.toThrow();
    await g.done;
    faulty.clearRules();
    expect(ends.held.device.volume.name).not.toContain('vm2');
    expect(agrees(await contents(ends.source.pool, 'vm'), model)).toBe(true);
  });
});

/** Counts requests to both pools' devices and cuts the power of both at once, as one machine losing it. */
class PowerCut extends PassThroughDevice {
  constructor(
    inner: CrashSimulator,
    private readonly budget: { left: number; sims: CrashSimulator[] },
  ) {
    super(inner);
  }
  private tick(): void {
    if (--this.budget.left === 0) for (const s of this.budget.sims) s.cutAfter(0);
  }
  override write(buf: Uint8Array, offset: number, o?: WriteOptions): Promise<void> {
    this.tick();
    return super.write(buf, offset, o);
  }
  override flush(): Promise<void> {
    this.tick();
    return super.flush();
  }
}

describe('hot migration and power loss', () => {
  it('leaves the volume whole in exactly one place at any crash point (copy, pivot, source removal), after the pools settle', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer(), fc.integer({ min: 1, max: 1000 }), fc.integer(), fc.boolean(), async (seed, cutAt, crashSeed, withHistory) => {
        // A whole migration is about 200 requests to the two devices, about 300 with a history to send: cuts land before, during and after the pivot, and past its end.
        const cut = Math.ceil(cutAt * (withHistory ? 0.34 : 0.22));
        const home = `${scratch.dir}/crash-${seed}-${cut}-${withHistory}`;
        const baseA = new MemoryDevice({ size: 16 << 20 });
        const baseB = new MemoryDevice({ size: 16 << 20 });
        const { ends: made, model } = await setup(home, baseA, baseB, seed);
        const snaps = withHistory ? await history(made, model, false) : new Map<string, Buffer>();
        // Left open, not closed (closing a memory device drops its bytes): the new openings below read what was made durable.
        for (const p of [made.source.pool, made.target.pool]) {
          await p.flush();
          await p.store.checkpoint();
        }
        const simA = new CrashSimulator(baseA);
        const simB = new CrashSimulator(baseB);
        const budget = { left: cut, sims: [simA, simB] };
        const source = await Pool.open(new PowerCut(simA, budget), opts);
        const target = await Pool.open(new PowerCut(simB, budget), opts);
        const vol = await source.openVolume('vm');
        const ends: MigrationEnds = { home, source: { name: 'a', pool: source }, target: { name: 'b', pool: target }, held: { device: new MovableDevice(vol), exportName: 'vm' } };
        const g = guest(ends.held.device, model, seed, 20);
        let migrated = false;
        try {
          await runMigration(ends, { volume: 'vm', targetPool: 'b', targetVolume: 'vm2' }, undefined);
          migrated = true;
        } catch {
          // power lost (or the mirror gave up when it did)
        }
        await g.done.catch(() => undefined);
        const inflight = g.inflight;
        const a = await Pool.open((await simA.crash(crashSeed)).device, opts);
        const b = await Pool.open((await simB.crash(crashSeed + 1)).device, opts);
        const records = new MigrationRecords(home);
        for (const rec of records.list()) await settleMigration(records, rec, { source: a, target: b });
        expect(records.list()).toEqual([]);
        const inA = a.volumeRecords().map((v) => v.name);
        const inB = b.volumeRecords().map((v) => v.name);
        expect(inA.length + inB.length, `the volume is in exactly one place (a: ${inA.join()}, b: ${inB.join()})`).toBe(1);
        if (migrated) expect(inB).toEqual(['vm2']);
        const [where, name] = inA.length === 1 ? [a, 'vm'] : [b, 'vm2'];
        expect(agrees(await contents(where, name), model, inflight), 'every flushed write is there').toBe(true);
        expect(where.catalogNow.snapshots.map((x) => x.name).sort(), 'the snapshots are with the volume, and no temporary one is left').toEqual([...snaps.keys()]);
        for (const [snap, want] of snaps) expect((await snapshotBytes(where, name, snap)).equals(want), `@${snap}`).toBe(true);
        expect([...a.catalogNow.snapshots, ...b.catalogNow.snapshots].length).toBe(snaps.size);
        expect((await a.check()).problems).toEqual([]);
        expect((await b.check()).problems).toEqual([]);
        await a.close();
        await b.close();
      }),
      { numRuns: propertyRuns(60, 20) },
    );
  }, 300_000);
});
