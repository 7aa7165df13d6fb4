import { createHash, randomUUID } from 'node:crypto';
import type { BlockDevice } from '../blockdev/index.js';
import type { Pool } from '../qcowlike/index.js';
import { createSnapshots, deleteSnapshot, deleteTemplate, listSnapshots, openFrozen } from '../snapshot/index.js';
import { volumeExists } from '../host/diff-import.js';
import { volumeRuns } from '../host/volume-runs.js';
import { ReceiveNote } from './receive-note.js';
import { historyOf, TEMPORARY_PREFIX } from './send-plan.js';
import { templateHolding } from './receive.js';
import { DiffImports } from '../host/diff-imports.js';

/**
 * The pool-side steps of send, receive and migrate around the streams: each
 * runs on an open pool, in the command's process or in the server that
 * holds the pool (send-transfer.ts), the same function either way.
 */

/** A snapshot of the volume as it is now, under a name no user picks (send-tmp-…), for a stream of the volume itself. */
export async function takeTemporary(pool: Pool, volume: string, name = temporaryName()): Promise<string> {
  await createSnapshots(pool, [{ volume, snapshot: name }]);
  return name;
}

/** A name for a temporary snapshot, known before it is taken (so that a record can name it first). */
export function temporaryName(): string {
  return `${TEMPORARY_PREFIX}${randomUUID().replace(/-/g, '').slice(0, 12)}`;
}

export async function dropSnapshot(pool: Pool, volume: string, snapshot: string): Promise<void> {
  await deleteSnapshot(pool, { volume, snapshot });
}

/** What a migration needs to know of the volume it moves. */
export interface SourceState {
  size: number;
  /** The newest snapshot of the volume (its head's parent in time), or null. */
  last: string | null;
  /** Volumes and templates of this pool cloned from the volume's snapshots: they keep the volume here. */
  clones: string[];
  /** The UUID of the template or snapshot the volume is a linked clone of, or null. */
  origin: string | null;
}

export async function sourceState(pool: Pool, volume: string): Promise<SourceState> {
  const info = await pool.volumeInfo(volume);
  const snaps = (await listSnapshots(pool, volume)).filter((s) => !s.name.startsWith(TEMPORARY_PREFIX));
  const clones = [...new Set(snaps.flatMap((s) => s.dependants))].filter((d) => d !== volume && !d.startsWith(`${volume}@`));
  const head = pool.catalogNow.volumes.find((v) => v.name === volume)!;
  const origin = historyOf(pool, volume, pool.layerById(head.layer)).origin?.point.uuid ?? null;
  return { size: info.size, last: snaps[snaps.length - 1]?.name ?? null, clones, origin };
}

/** Read per step of a digest: whole blocks, so both sides cut the same pieces whatever their maps. */
const DIGEST_BLOCK = 64 * 1024;
const DIGEST_CHUNK = 16 * DIGEST_BLOCK;

/**
 * The SHA-256 of what a volume (snapshot null: its head) or a snapshot reads,
 * over its non-zero 64 KiB blocks and their offsets, so that two copies of
 * the same bytes agree however each is allocated (a hole, zeroes, data);
 * runs that block status calls zero are not read.
 */
export async function chainDigest(pool: Pool, volume: string, snapshot: string | null): Promise<string> {
  const h = snapshot === null ? await pool.openVolume(volume, { readOnly: true }) : await openFrozen(pool, { volume, snapshot });
  try {
    return await digestOf(h);
  } finally {
    await h.close();
  }
}

async function digestOf(dev: Pick<BlockDevice, 'name' | 'size' | 'read'> & Required<Pick<BlockDevice, 'blockStatus'>>): Promise<string> {
  const hash = createHash('sha256');
  hash.update(`size ${dev.size}\n`);
  const buf = Buffer.alloc(DIGEST_CHUNK);
  const zero = Buffer.alloc(DIGEST_BLOCK);
  let next = 0;
  for await (const run of volumeRuns(dev)) {
    if (run.zero) continue;
    // Blocks straddling runs are read whole, once.
    let pos = Math.max(next, Math.floor(run.offset / DIGEST_BLOCK) * DIGEST_BLOCK);
    const end = Math.min(dev.size, Math.ceil((run.offset + run.length) / DIGEST_BLOCK) * DIGEST_BLOCK);
    while (pos < end) {
      const n = Math.min(DIGEST_CHUNK, end - pos);
      await dev.read(buf.subarray(0, n), pos);
      for (let at = 0; at < n; at += DIGEST_BLOCK) {
        const block = buf.subarray(at, Math.min(n, at + DIGEST_BLOCK));
        if (block.equals(zero.subarray(0, block.length))) continue;
        hash.update(`${pos + at}\n`);
        hash.update(block);
      }
      pos += n;
    }
    next = end;
  }
  return hash.digest('hex');
}

/** The template of this pool known to hold origin `uuid`'s bytes, or null: a migration then leaves the origin out of its stream. */
export function holdsOrigin(pool: Pool, home: string, poolName: string, uuid: string): string | null {
  return templateHolding(pool, new DiffImports(home, poolName), uuid);
}

/** The volume, its snapshots and its layers go in one commit. */
export async function removeChain(pool: Pool, volume: string): Promise<void> {
  await pool.deleteVolumeChain(volume);
}

/**
 * Takes back what an unfinished receive into `volume` made: the volume with
 * its snapshots, and the base template it created when nothing else came
 * to depend on it; the note goes too. A volume it did not create is left.
 */
export async function abandonReceive(pool: Pool, home: string, poolName: string, volume: string): Promise<{ removed: string[] }> {
  const note = new ReceiveNote(home, poolName);
  const p = note.get(volume);
  if (!p) return { removed: [] };
  const removed: string[] = [];
  if (p.createdVolume && (await volumeExists(pool, volume))) {
    await pool.deleteVolumeChain(volume);
    removed.push(volume);
  }
  const base = p.baseTemplate;
  if (base !== undefined && p.baseCreated === true) {
    if (pool.catalogNow.templates.some((t) => t.name === base)) {
      try {
        await deleteTemplate(pool, base);
        removed.push(base);
      } catch {
        // Another clone came to use it: it stays.
      }
    } else if (await volumeExists(pool, base)) {
      await pool.deleteVolume(base);
      removed.push(base);
    }
  }
  note.drop(volume);
  return { removed };
}
