import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CrashSimulator, MemoryDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';

/** With 4 KiB clusters an L2 table maps 204 clusters: volumes of up to four tables. */
const TABLE = 204 * 4096;
const NAMES = ['a', 'b', 'c'] as const;
type Name = (typeof NAMES)[number];

type Admin = { op: 'create'; name: Name; size: number } | { op: 'delete'; name: Name } | { op: 'resize'; name: Name; size: number };
type Op = Admin | { op: 'write'; name: Name; at: number; len: number; seed: number } | { op: 'flush' };

const nameArb = fc.constantFrom(...NAMES);
const sizeArb = fc.integer({ min: 1, max: 4 * TABLE / 512 }).map((s) => s * 512);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ op: fc.constant('create' as const), name: nameArb, size: sizeArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), name: nameArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('resize' as const), name: nameArb, size: sizeArb }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('write' as const), name: nameArb, at: fc.nat(4 * TABLE - 1), len: fc.integer({ min: 1, max: 3 * 4096 }), seed: fc.integer() }) },
  { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
);

/** A volume as the model knows it: its size, its bytes now and at the last commit, and what each byte may read after a crash. */
interface ModelVolume {
  size: number;
  current: Uint8Array;
  durable: Uint8Array;
  durableSize: number;
  /** Values a byte may hold after a crash besides the durable one (written since the last commit). */
  since: Map<number, Set<number>>;
}

class Model {
  vols = new Map<Name, ModelVolume>();
  /** The catalog as of the last commit. */
  durable = new Map<Name, ModelVolume>();

  commit(): void {
    for (const v of this.vols.values()) {
      v.durable = v.current.slice();
      v.durableSize = v.size;
      v.since.clear();
    }
    this.durable = new Map(this.vols);
  }

  write(name: Name, at: number, data: Uint8Array): void {
    const v = this.vols.get(name)!;
    for (let i = 0; i < data.length; i++) {
      const k = at + i;
      let s = v.since.get(k);
      if (!s) v.since.set(k, (s = new Set([v.durable[k] ?? 0])));
      s.add(data[i]!);
      v.current[k] = data[i]!;
    }
  }

  /** Applies an admin operation (it commits when it returns). */
  apply(a: Admin): void {
    if (a.op === 'create') {
      const bytes = new Uint8Array(a.size);
      this.vols.set(a.name, { size: a.size, current: bytes, durable: bytes.slice(), durableSize: a.size, since: new Map() });
    } else if (a.op === 'delete') {
      this.vols.delete(a.name);
    } else {
      const v = this.vols.get(a.name)!;
      const next = new Uint8Array(a.size);
      next.set(v.current.subarray(0, Math.min(a.size, v.size)));
      v.current = next;
      v.size = a.size;
    }
    this.commit();
  }
}

function legal(model: Model, a: Admin): boolean {
  const has = model.vols.has(a.name);
  return a.op === 'create' ? !has : has;
}

/** After the crash: the pool's volumes must be the durable catalog, or, for the admin operation cut short, its result. */
async function verify(pool: Pool, model: Model, cut: Admin | undefined, cutAfter: Model | undefined): Promise<void> {
  expect((await pool.check()).problems, 'check after crash').toEqual([]);
  const names = new Set((await pool.listVolumes()).map((v) => v.name as Name));
  const durableNames = new Set(model.durable.keys());
  const afterNames = cutAfter ? new Set(cutAfter.vols.keys()) : durableNames;
  const same = (x: Set<Name>, y: Set<Name>): boolean => x.size === y.size && [...x].every((n) => y.has(n));
  expect(same(names, durableNames) || same(names, afterNames), `volumes ${[...names]} after the crash; expected ${[...durableNames]} or ${[...afterNames]}`).toBe(true);
  // A delete cut short was finished by the open (check waits for it): no layer is left without a volume.
  expect(pool.stats().layers, 'layers left after reopening').toBe(names.size);
  for (const name of names) {
    const before = model.durable.get(name);
    const after = cutAfter?.vols.get(name);
    const info = await pool.volumeInfo(name);
    // The volume the cut operation was about: its old state or its new one.
    const candidates = [before, cut?.name === name ? after : undefined].filter((v): v is ModelVolume => v !== undefined);
    const m = candidates.find((c) => c.durableSize === info.size || c.size === info.size);
    expect(m, `volume '${name}' has size ${info.size}; model sizes ${candidates.map((c) => `${c.durableSize}/${c.size}`).join(', ')}`).toBeDefined();
    const vol = await pool.openVolume(name);
    const back = Buffer.alloc(info.size);
    await vol.read(back, 0);
    await vol.close();
    for (let i = 0; i < info.size; i++) {
      const ok = (c: ModelVolume): boolean => {
        if (i >= c.durableSize && i >= c.size) return back[i] === 0;
        const s = c.since.get(i);
        return back[i] === (c.durable[i] ?? 0) || (s !== undefined && s.has(back[i]!)) || back[i] === (c.current[i] ?? 0);
      };
      // A shrink discards the tail before it changes the size: cut short, the old size may show zeroes there.
      const discarded = cut?.op === 'resize' && cut.name === name && i >= cut.size && back[i] === 0;
      if (!discarded && !candidates.some(ok)) throw new Error(`volume '${name}' byte ${i} reads ${back[i]} after the crash`);
    }
  }
}

async function crashCase(ops: Op[], cutAfter: number, seed: number): Promise<void> {
  const base = new MemoryDevice({ size: 4 << 20 });
  const opts = { cacheBytes: 8 * 4096, journalBytes: 96 * 1024 };
  await (await Pool.create(base, { clusterSize: 4096, ...opts })).store.checkpoint();
  const sim = new CrashSimulator(base);
  const pool = await Pool.open(sim, opts);
  const model = new Model();
  let cut: Admin | undefined;
  let cutModel: Model | undefined;
  sim.cutAfter(cutAfter);
  try {
    for (const o of ops) {
      if (o.op === 'flush') {
        await pool.flush();
        model.commit();
      } else if (o.op === 'write') {
        const v = model.vols.get(o.name);
        if (!v || o.at >= v.size) continue;
        const data = pattern(Math.min(o.len, v.size - o.at), o.seed);
        const vol = await pool.openVolume(o.name);
        model.write(o.name, o.at, data);
        await vol.write(data, o.at);
        await vol.close();
      } else if (legal(model, o)) {
        // A writer on another volume keeps committing while the catalog changes, as on a served pool.
        const other = NAMES.find((n) => n !== o.name && model.vols.has(n));
        cut = o;
        cutModel = structuredClone(model);
        Object.setPrototypeOf(cutModel, Model.prototype);
        cutModel.apply(o);
        const background = other ? busyWriter(pool, model, other) : Promise.resolve();
        const run = o.op === 'create' ? pool.createVolume(o.name, o.size) : o.op === 'delete' ? pool.deleteVolume(o.name) : pool.resizeVolume(o.name, o.size, { force: true });
        await Promise.all([run, background]);
        model.apply(o);
        cut = undefined;
        cutModel = undefined;
      }
    }
  } catch (err) {
    expect((err as Error).message).toMatch(/lost power/);
  }
  const report = await sim.crash(seed);
  const reopened = await Pool.open(report.device, opts);
  await verify(reopened, model, cut, cutModel);
  await reopened.close();
}

/** Writes and flushes a few times on `name` (recorded in the model as it goes). */
async function busyWriter(pool: Pool, model: Model, name: Name): Promise<void> {
  const v = model.vols.get(name)!;
  const vol = await pool.openVolume(name);
  try {
    for (let k = 0; k < 3; k++) {
      const at = (k * 97 * 4096) % v.size;
      const data = pattern(Math.min(4096, v.size - at), k + 7);
      model.write(name, at, data);
      await vol.write(data, at);
      await vol.flush();
    }
  } finally {
    await vol.close();
  }
}

/**
 * Power loss in the middle of volume create, delete and resize, while another
 * volume is being written and flushed: the pool reopens with `check` clean (no
 * leak, nothing referenced that is free), each volume is either as it was or
 * as the operation left it, and no data outside the operation changes.
 */
describe('pool crash consistency of catalog changes', () => {
  it('create, delete and resize survive power loss at any point, with a writer committing alongside', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 20 }), fc.integer({ min: 0, max: 300 }), fc.integer(), async (ops, cutAfter, seed) => {
        await crashCase(ops, cutAfter, seed);
      }),
      { numRuns: propertyRuns(300, 40) },
    );
  }, 900_000);
});
