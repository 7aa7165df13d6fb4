import { randomUUID } from 'node:crypto';
import type { Pool, Volume } from '../../src/qcowlike/index.js';
import type { DiffExtent, SnapshotInfo, SnapshotRef } from '../../src/snapshot/index.js';
import { volumeBytes } from './volume-bytes.js';

/**
 * A stand-in for the chain operations that diff, export-diff and import-diff
 * use (createSnapshots, listSnapshots, diffRanges, openFrozen,
 * revertSnapshot), for tests that run before the format has them: a snapshot
 * is a copy of the volume's bytes held here, and diffRanges compares bytes
 * (the real one reads metadata only). Same signatures, same meaning.
 */

interface Frozen {
  info: SnapshotInfo;
  bytes: Buffer;
}

const frozen = new WeakMap<Pool, Map<string, Frozen[]>>();

function of(pool: Pool, volume: string): Frozen[] {
  let m = frozen.get(pool);
  if (!m) frozen.set(pool, (m = new Map()));
  let list = m.get(volume);
  if (!list) m.set(volume, (list = []));
  return list;
}

export const calls = { createSnapshots: 0, failNextCreate: false };

export async function createSnapshots(pool: Pool, refs: SnapshotRef[]): Promise<SnapshotInfo[]> {
  calls.createSnapshots++;
  if (calls.failNextCreate) {
    calls.failNextCreate = false;
    throw new Error('power lost while making the snapshot');
  }
  const out: SnapshotInfo[] = [];
  for (const r of refs) {
    const bytes = await volumeBytes(pool, r.volume);
    const list = of(pool, r.volume);
    if (list.some((f) => f.info.name === r.snapshot)) throw new Error(`snapshot ${r.volume}@${r.snapshot} exists`);
    const info: SnapshotInfo = { volume: r.volume, name: r.snapshot, uuid: randomUUID(), created: new Date().toISOString(), size: bytes.length, layer: list.length + 1, exclusiveBytes: 0, dependants: [] };
    list.push({ info, bytes });
    out.push(info);
  }
  return out;
}

export async function listSnapshots(pool: Pool, volume: string): Promise<SnapshotInfo[]> {
  await pool.volumeInfo(volume);
  return of(pool, volume).map((f) => f.info);
}

function find(pool: Pool, volume: string, name: string): Frozen {
  const f = of(pool, volume).find((x) => x.info.name === name);
  if (!f) throw new Error(`no snapshot ${volume}@${name}`);
  return f;
}

const GRAIN = 4096;

export async function* diffRanges(pool: Pool, volume: string, from: string | null, to: string | null): AsyncGenerator<DiffExtent> {
  const b = to === null ? await volumeBytes(pool, volume) : find(pool, volume, to).bytes;
  const a = from === null ? Buffer.alloc(b.length) : find(pool, volume, from).bytes;
  let run: DiffExtent | null = null;
  for (let at = 0; at < b.length; at += GRAIN) {
    const end = Math.min(b.length, at + GRAIN);
    const nb = b.subarray(at, end);
    const na = a.subarray(at, Math.min(a.length, end));
    const same = na.length === nb.length && na.equals(nb);
    const kind: DiffExtent['kind'] | null = same ? null : nb.every((x) => x === 0) ? 'zero' : 'data';
    if (run && (kind !== run.kind || run.offset + run.length !== at)) {
      yield run;
      run = null;
    }
    if (kind === null) continue;
    if (run) run.length += end - at;
    else run = { offset: at, length: end - at, kind };
  }
  if (run) yield run;
}

export async function openFrozen(pool: Pool, source: SnapshotRef | { template: string }): Promise<Volume & { allocationDepth(): Promise<never[]> }> {
  if (!('volume' in source)) throw new Error('templates are not faked');
  const f = find(pool, source.volume, source.snapshot);
  const view = {
    name: `${source.volume}@${source.snapshot}`,
    size: f.bytes.length,
    async read(buf: Uint8Array, offset: number): Promise<void> {
      buf.set(f.bytes.subarray(offset, offset + buf.length));
    },
    async close(): Promise<void> {},
    async allocationDepth(): Promise<never[]> {
      return [];
    },
  };
  return view as unknown as Volume & { allocationDepth(): Promise<never[]> };
}

export async function revertSnapshot(pool: Pool, ref: SnapshotRef): Promise<void> {
  const f = find(pool, ref.volume, ref.snapshot);
  const v = await pool.openVolume(ref.volume);
  try {
    await v.write(f.bytes, 0);
  } finally {
    await v.close();
  }
}
