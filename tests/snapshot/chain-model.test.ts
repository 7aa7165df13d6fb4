import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/blockdev/index.js';
import { Pool, PoolError, type VolumeHandle } from '../../src/qcowlike/index.js';
import { cloneVolume, convertToTemplate, createSnapshots, deleteSnapshot, deleteTemplate, flattenVolume, openFrozen, revertSnapshot, templateFrom } from '../../src/snapshot/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { reopenable } from '../support/pool.js';
import { propertyRuns } from '../support/scratch.js';

/** Every operation picks its targets by index into what exists when it runs, so any sequence is valid. */
type Op =
  | { op: 'write'; v: number; at: number; len: number; seed: number }
  | { op: 'discard'; v: number; at: number; len: number }
  | { op: 'snapshot'; v: number; also: boolean }
  | { op: 'clone'; s: number; fromTemplate: boolean }
  | { op: 'revert'; s: number }
  | { op: 'deleteSnapshot'; s: number }
  | { op: 'template'; v: number; how: 'convert' | 'fromVolume' | 'fromTemplate' }
  | { op: 'deleteTemplate'; t: number }
  | { op: 'deleteVolume'; v: number }
  | { op: 'flatten'; v: number }
  | { op: 'flush' }
  | { op: 'reopen' };

const idx = fc.nat(50);
const frac = fc.double({ min: 0, max: 1, noNaN: true });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ v: idx, at: frac, len: fc.integer({ min: 1, max: 90_000 }), seed: fc.integer() }).map((r) => ({ op: 'write' as const, ...r })) },
  { weight: 2, arbitrary: fc.record({ v: idx, at: frac, len: fc.integer({ min: 1, max: 150_000 }) }).map((r) => ({ op: 'discard' as const, ...r })) },
  { weight: 4, arbitrary: fc.record({ v: idx, also: fc.boolean() }).map((r) => ({ op: 'snapshot' as const, ...r })) },
  { weight: 2, arbitrary: fc.record({ s: idx, fromTemplate: fc.boolean() }).map((r) => ({ op: 'clone' as const, ...r })) },
  { weight: 2, arbitrary: idx.map((s) => ({ op: 'revert' as const, s })) },
  { weight: 3, arbitrary: idx.map((s) => ({ op: 'deleteSnapshot' as const, s })) },
  { weight: 1, arbitrary: fc.record({ v: idx, how: fc.constantFrom('convert' as const, 'fromVolume' as const, 'fromTemplate' as const) }).map((r) => ({ op: 'template' as const, ...r })) },
  { weight: 1, arbitrary: idx.map((t) => ({ op: 'deleteTemplate' as const, t })) },
  { weight: 1, arbitrary: idx.map((v) => ({ op: 'deleteVolume' as const, v })) },
  { weight: 1, arbitrary: idx.map((v) => ({ op: 'flatten' as const, v })) },
  { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
) as fc.Arbitrary<Op>;

const SIZE = 256 * 1024;

async function readAll(h: { read(b: Uint8Array, o: number): Promise<void>; size: number }): Promise<Buffer> {
  const b = Buffer.alloc(h.size);
  await h.read(b, 0);
  return b;
}

/** A refusal the library must be able to give: clones depend on it, or it still has snapshots. */
function refused(err: unknown): boolean {
  return err instanceof PoolError && err.code === 'EBUSY';
}

describe('snapshots, clones and templates against byte-array models', () => {
  it('every volume, snapshot and template reads as its model through any sequence of chain operations, reopens included; check stays clean', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(4096, 65536), fc.array(opArb, { minLength: 4, maxLength: 40, size: 'max' }), async (clusterSize, ops) => {
        const dev = new MemoryDevice({ size: 40 << 20 });
        const opts = { cacheBytes: 8 * clusterSize, journalBytes: 256 * 1024 };
        let pool = await Pool.create(reopenable(dev), { clusterSize, ...opts });
        const volumes = new Map<string, Uint8Array>();
        const snapshots = new Map<string, Uint8Array>();
        const templates = new Map<string, Uint8Array>();
        const handles = new Map<string, VolumeHandle>();
        let n = 0;
        const open = async (v: string): Promise<VolumeHandle> => {
          let h = handles.get(v);
          if (!h) handles.set(v, (h = await pool.openVolume(v)));
          return h;
        };
        const closeAll = async (): Promise<void> => {
          for (const h of handles.values()) await h.close();
          handles.clear();
        };
        const pick = <T>(m: Map<string, T>, i: number): string | undefined => [...m.keys()][i % Math.max(1, m.size)];
        await pool.createVolume('v0', SIZE);
        volumes.set('v0', new Uint8Array(SIZE));
        for (const o of ops) {
          switch (o.op) {
            case 'write':
            case 'discard': {
              const v = pick(volumes, o.v);
              if (!v) break;
              const model = volumes.get(v)!;
              const at = Math.min(model.length - 1, Math.floor(o.at * model.length));
              const len = Math.min(o.len, model.length - at);
              const h = await open(v);
              if (o.op === 'write') {
                const data = pattern(len, o.seed);
                await h.write(data, at);
                model.set(data, at);
              } else {
                await h.discard(at, len);
                model.fill(0, at, at + len);
              }
              break;
            }
            case 'snapshot': {
              const v = pick(volumes, o.v);
              if (!v) break;
              const group = [v];
              const w = pick(volumes, o.v + 1);
              if (o.also && w && w !== v) group.push(w);
              const name = `s${n++}`;
              await createSnapshots(pool, group.map((volume) => ({ volume, snapshot: name })));
              for (const g of group) snapshots.set(`${g}@${name}`, volumes.get(g)!.slice());
              break;
            }
            case 'clone': {
              const src = o.fromTemplate ? pick(templates, o.s) : pick(snapshots, o.s);
              if (!src) break;
              const name = `v${n++}`;
              if (o.fromTemplate) await cloneVolume(pool, { template: src }, name);
              else await cloneVolume(pool, { volume: src.split('@')[0]!, snapshot: src.split('@')[1]! }, name);
              volumes.set(name, (o.fromTemplate ? templates : snapshots).get(src)!.slice());
              break;
            }
            case 'revert': {
              const s = pick(snapshots, o.s);
              if (!s) break;
              const [volume, snapshot] = s.split('@') as [string, string];
              if (!volumes.has(volume)) break;
              await revertSnapshot(pool, { volume, snapshot }, { force: true });
              volumes.set(volume, snapshots.get(s)!.slice());
              break;
            }
            case 'deleteSnapshot': {
              const s = pick(snapshots, o.s);
              if (!s) break;
              const [volume, snapshot] = s.split('@') as [string, string];
              try {
                await deleteSnapshot(pool, { volume, snapshot });
                snapshots.delete(s);
              } catch (err) {
                if (!refused(err)) throw err;
              }
              break;
            }
            case 'template': {
              const name = `t${n++}`;
              if (o.how === 'fromTemplate') {
                const t = pick(templates, o.v);
                if (!t) break;
                await templateFrom(pool, { template: t }, name);
                templates.set(name, templates.get(t)!.slice());
                break;
              }
              const v = pick(volumes, o.v);
              if (!v) break;
              if (o.how === 'fromVolume') {
                await templateFrom(pool, { volume: v }, name);
                templates.set(name, volumes.get(v)!.slice());
              } else {
                await handles.get(v)?.close();
                handles.delete(v);
                await convertToTemplate(pool, v);
                templates.set(v, volumes.get(v)!);
                volumes.delete(v);
              }
              break;
            }
            case 'deleteTemplate': {
              const t = pick(templates, o.t);
              if (!t) break;
              try {
                await deleteTemplate(pool, t);
                templates.delete(t);
              } catch (err) {
                if (!refused(err)) throw err;
              }
              break;
            }
            case 'deleteVolume': {
              const v = pick(volumes, o.v);
              if (!v) break;
              await handles.get(v)?.close();
              handles.delete(v);
              try {
                await pool.deleteVolume(v);
                volumes.delete(v);
              } catch (err) {
                if (!refused(err)) throw err;
              }
              break;
            }
            case 'flatten': {
              const v = pick(volumes, o.v);
              if (v) await flattenVolume(pool, v);
              break;
            }
            case 'flush':
              for (const h of handles.values()) await h.flush();
              break;
            case 'reopen':
              await closeAll();
              await pool.close();
              pool = await Pool.open(reopenable(dev), opts);
              break;
          }
        }
        for (const [v, model] of volumes) expect(Buffer.compare(await readAll(await open(v)), model), `volume ${v}`).toBe(0);
        await closeAll();
        for (const [s, model] of snapshots) {
          const [volume, snapshot] = s.split('@') as [string, string];
          const h = await openFrozen(pool, { volume, snapshot });
          expect(Buffer.compare(await readAll(h), model), `snapshot ${s}`).toBe(0);
          await h.close();
        }
        for (const [t, model] of templates) {
          const h = await openFrozen(pool, { template: t });
          expect(Buffer.compare(await readAll(h), model), `template ${t}`).toBe(0);
          await h.close();
        }
        expect((await pool.check()).problems).toEqual([]);
        await pool.close();
        const again = await Pool.open(reopenable(dev), opts);
        expect((await again.check()).problems).toEqual([]);
        await again.close();
      }),
      { numRuns: propertyRuns(300) },
    );
  }, 900_000);
});
