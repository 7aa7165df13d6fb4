import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CrashSimulator, MemoryDevice, Rng } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { cloneVolume, convertToTemplate, createSnapshots, deleteSnapshot, deleteTemplate, flattenVolume, openFrozen, revertSnapshot, templateFrom } from '../../src/snapshot/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { propertyRuns } from '../support/scratch.js';

/** With 4 KiB clusters an L2 table maps 204 clusters: volumes of three tables. */
const SIZE = 3 * 204 * 4096;
const opts = { cacheBytes: 10 * 4096, journalBytes: 128 * 1024 };

/** Every name the pool holds (volumes, `vol@snap`, templates) with what it must read. */
type Model = Map<string, Uint8Array>;

const OPS = ['snapshot-group', 'delete-oldest', 'delete-middle', 'delete-newest', 'delete-branched', 'revert', 'clone', 'flatten', 'template-convert', 'template-from', 'template-delete', 'delete-chain'] as const;
type ChainOp = (typeof OPS)[number];

async function write(pool: Pool, model: Model, name: string, rng: Rng, count: number): Promise<void> {
  const vol = await pool.openVolume(name);
  const m = model.get(name)!;
  for (let k = 0; k < count; k++) {
    const at = rng.below(SIZE / 512) * 512;
    const data = pattern(Math.min(SIZE - at, 512 * (1 + rng.below(40))), rng.below(1 << 30));
    await vol.write(data, at);
    m.set(data, at);
  }
  await vol.close();
}

/** A history with every shape the operations meet: a chain, a group snapshot, a revert branch, a clone, a template. */
async function history(pool: Pool, model: Model, rng: Rng): Promise<void> {
  for (const v of ['v', 'u', 'w']) {
    await pool.createVolume(v, SIZE);
    model.set(v, new Uint8Array(SIZE));
  }
  const snap = async (vols: string[], name: string): Promise<void> => {
    await createSnapshots(pool, vols.map((volume) => ({ volume, snapshot: name })));
    for (const v of vols) model.set(`${v}@${name}`, model.get(v)!.slice());
  };
  await write(pool, model, 'v', rng, 30);
  await snap(['v'], 's1');
  await write(pool, model, 'v', rng, 20);
  await snap(['v', 'u'], 's2');
  await write(pool, model, 'v', rng, 20);
  await snap(['v'], 's3');
  await write(pool, model, 'v', rng, 10);
  // A branch: back to s2 (s3 stays), then new writes.
  await revertSnapshot(pool, { volume: 'v', snapshot: 's2' });
  model.set('v', model.get('v@s2')!.slice());
  await write(pool, model, 'v', rng, 10);
  await cloneVolume(pool, { volume: 'u', snapshot: 's2' }, 'c');
  model.set('c', model.get('u@s2')!.slice());
  await write(pool, model, 'c', rng, 10);
  await templateFrom(pool, { volume: 'u' }, 't');
  model.set('t', model.get('u')!.slice());
  await write(pool, model, 'u', rng, 10);
  await pool.flush();
}

/** One step of an operation: what it does to the pool, and to the model. */
interface Step {
  run(pool: Pool): Promise<unknown>;
  model(m: Model): void;
}

function steps(op: ChainOp): Step[] {
  const del = (snapshot: string): Step => ({ run: (p) => deleteSnapshot(p, { volume: 'v', snapshot }), model: (m) => m.delete(`v@${snapshot}`) });
  const copy = (to: string, from: string): ((m: Model) => void) => (m) => m.set(to, m.get(from)!.slice());
  switch (op) {
    case 'snapshot-group':
      return [{ run: (p) => createSnapshots(p, [{ volume: 'v', snapshot: 'g' }, { volume: 'c', snapshot: 'g' }]), model: (m) => (copy('v@g', 'v')(m), copy('c@g', 'c')(m)) }];
    case 'delete-oldest':
      return [del('s1')];
    case 'delete-middle':
      return [del('s3')];
    case 'delete-newest':
      // s2 has two children (s3 and the reverted top): a base shared by both afterwards.
      return [del('s2')];
    case 'delete-branched':
      return [del('s3'), del('s2')];
    case 'revert':
      return [{ run: (p) => revertSnapshot(p, { volume: 'v', snapshot: 's1' }), model: copy('v', 'v@s1') }];
    case 'clone':
      return [{ run: (p) => cloneVolume(p, { template: 't' }, 'd'), model: copy('d', 't') }];
    case 'flatten':
      return [{ run: (p) => flattenVolume(p, 'c'), model: () => undefined }];
    case 'template-convert':
      return [{ run: (p) => convertToTemplate(p, 'v'), model: () => undefined }];
    case 'template-from':
      return [{ run: (p) => templateFrom(p, { template: 't' }, 't2'), model: copy('t2', 't') }];
    case 'delete-chain':
      // The branched volume with all three snapshots, in one step (a migration's source).
      return [{ run: (p) => p.deleteVolumeChain('v'), model: (m) => ['v', 'v@s1', 'v@s2', 'v@s3'].forEach((n) => m.delete(n)) }];
    case 'template-delete':
      return [
        { run: (p) => templateFrom(p, { template: 't' }, 't3'), model: copy('t3', 't') },
        { run: (p) => deleteTemplate(p, 't3'), model: (m) => m.delete('t3') },
      ];
  }
}

async function names(pool: Pool): Promise<string[]> {
  const c = pool.catalogNow;
  return [...c.volumes.map((v) => v.name), ...c.snapshots.map((s) => `${s.volume}@${s.name}`), ...c.templates.map((t) => t.name)].sort();
}

async function reads(pool: Pool, name: string): Promise<Buffer> {
  const [volume, snapshot] = name.split('@') as [string, string | undefined];
  const isTemplate = pool.catalogNow.templates.some((t) => t.name === name);
  const h = snapshot !== undefined ? await openFrozen(pool, { volume, snapshot }) : isTemplate ? await openFrozen(pool, { template: name }) : await pool.openVolume(name);
  const b = Buffer.alloc(h.size);
  await h.read(b, 0);
  await h.close();
  return b;
}

/** The pool after the crash is the state before the operation or the state after it, whole; `w` (written meanwhile) aside. */
async function matches(pool: Pool, m: Model): Promise<boolean> {
  const have = await names(pool);
  const want = [...m.keys()].sort();
  if (have.join() !== want.join()) return false;
  for (const n of have) if (n !== 'w' && Buffer.compare(await reads(pool, n), m.get(n)!) !== 0) return false;
  return true;
}

async function crashCase(op: ChainOp, seed: number, cut: number, crashSeed: number): Promise<void> {
  const base = new MemoryDevice({ size: 12 << 20 });
  const rng = new Rng(seed);
  const before: Model = new Map();
  const setup = await Pool.create(base, { clusterSize: 4096, ...opts });
  await history(setup, before, rng);
  await setup.store.checkpoint();
  const sim = new CrashSimulator(base);
  const pool = await Pool.open(sim, opts);
  // The states the pool may be in after the crash: before, and after each step.
  const states: Model[] = [before];
  for (const st of steps(op)) {
    const next: Model = new Map([...states[states.length - 1]!].map(([k, v]) => [k, v.slice()]));
    st.model(next);
    states.push(next);
  }
  sim.cutAfter(cut);
  // A writer on another volume keeps committing while the chain changes, as on a served pool.
  const writer = (async () => {
    const vol = await pool.openVolume('w');
    for (let k = 0; k < 4; k++) {
      await vol.write(pattern(4096, k), k * 40960);
      await vol.flush();
    }
    await vol.close();
  })();
  let finished = false;
  try {
    const work = (async () => {
      for (const st of steps(op)) await st.run(pool);
    })();
    await Promise.all([work, writer]);
    finished = true;
  } catch (err) {
    expect((err as Error).message).toMatch(/lost power/);
  }
  const report = await sim.crash(crashSeed);
  const reopened = await Pool.open(report.device, opts);
  expect((await reopened.check()).problems, `check after a crash in ${op}`).toEqual([]);
  let ok = await matches(reopened, states[states.length - 1]!);
  for (const m of states.slice(0, -1)) if (!ok && !finished) ok = await matches(reopened, m);
  expect(ok, `after a crash in ${op} (cut after ${cut} requests) the pool holds ${(await names(reopened)).join(' ')}: neither the state before nor the one after`).toBe(true);
  await reopened.close();
}

describe('chain operations survive power loss at any point', () => {
  it('snapshot (group), delete (oldest, middle, shared, branched), revert, clone, flatten, template changes and deleting a volume with its chain: check clean, the state before or after, whole', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...OPS), fc.integer(), fc.integer({ min: 0, max: 500 }), fc.integer(), async (op, seed, cut, crashSeed) => {
        await crashCase(op, seed, cut, crashSeed);
      }),
      { numRuns: propertyRuns(200, 40) },
    );
  }, 900_000);
});

describe('the first snapshot of a pool', () => {
  it('sets the shared-maps bit crash-safely: a power loss anywhere leaves a pool that opens with nothing to report', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 60 }), fc.integer(), async (cut, crashSeed) => {
        const base = new MemoryDevice({ size: 8 << 20 });
        const setup = await Pool.create(base, { clusterSize: 4096, ...opts });
        await setup.createVolume('v', SIZE);
        const model: Model = new Map([['v', new Uint8Array(SIZE)]]);
        await write(setup, model, 'v', new Rng(crashSeed), 10);
        await setup.flush();
        await setup.store.checkpoint();
        const sim = new CrashSimulator(base);
        const pool = await Pool.open(sim, opts);
        sim.cutAfter(cut);
        let taken = false;
        try {
          await createSnapshots(pool, [{ volume: 'v', snapshot: 'first' }]);
          taken = true;
        } catch (err) {
          expect((err as Error).message).toMatch(/lost power/);
        }
        const reopened = await Pool.open((await sim.crash(crashSeed)).device, opts);
        expect((await reopened.check()).problems).toEqual([]);
        const after = new Map(model);
        after.set('v@first', model.get('v')!);
        expect((await matches(reopened, after)) || (!taken && (await matches(reopened, model)))).toBe(true);
        await reopened.close();
      }),
      { numRuns: propertyRuns(100, 30) },
    );
  }, 300_000);
});
