import fs from 'node:fs';
import path from 'node:path';
import { FileDevice, Rng, type BlockDevice } from '../src/blockdev/index.js';
import { Pool } from '../src/qcowlike/index.js';
import { cloneVolume, createSnapshots } from '../src/snapshot/index.js';
import { median } from './stats.js';

/**
 * Snapshot and clone create latency, in-process on a pool file: the claim is
 * milliseconds whatever the volume's size, so the same creates run on a
 * small and on a huge thin volume with data spread all over it.
 */
export interface CreateCase {
  /** Virtual size of the volume. */
  size: number;
  /** Bytes written before the first create: `pieces` runs of `piece` bytes, spread evenly over the volume. */
  piece: number;
  pieces: number;
}

export interface CreateResult {
  size: number;
  written: number;
  op: 'snapshot create' | 'clone create';
  count: number;
  /** The first create of the pool also turns on the shared-map feature, a one-time cost. */
  firstMs: number;
  medianMs: number;
  maxMs: number;
  samplesMs: number[];
  /**
   * Clones only: a volumeInfo of a new clone right after it (every fifth), timed alone.
   * cloneVolume returns that record, and building it reads every table of
   * every layer of the clone's chain, so it shows what of the clone's time
   * is the report rather than the clone.
   */
  infoMedianMs?: number;
}

const KIB4 = 4096;

/** What both sizes get by default: the 1 GiB volume written whole, the 1 TiB one 1 GiB in 64 KiB pieces 64 MiB apart. */
export function defaultCases(small: number, huge: number, written: number): CreateCase[] {
  const piece = 64 * 1024;
  return [
    { size: small, piece: 1 << 20, pieces: Math.max(1, Math.floor(Math.min(small, written) / (1 << 20))) },
    { size: huge, piece, pieces: Math.max(1, Math.floor(written / piece)) },
  ];
}

export async function runCreateBench(dir: string, cases: CreateCase[], count: number, log: (line: string) => void): Promise<CreateResult[]> {
  const out: CreateResult[] = [];
  for (const c of cases) {
    const file = path.join(dir, `create-${c.size}.pool`);
    const written = c.piece * c.pieces;
    const dev = FileDevice.create(file, { size: 2 * written + count * 64 * (1 << 20) + (1 << 30) });
    const pool = await Pool.create(dev);
    try {
      await pool.createVolume('v', c.size);
      const vol = await pool.openVolume('v');
      try {
        log(`create latency: writing ${written} bytes over a ${c.size}-byte volume`);
        await spread(vol, c);
        const rng = new Rng(c.size % 2147483647);
        const snaps: number[] = [];
        for (let i = 0; i < count; i++) {
          // A few fresh writes between snapshots, so each one freezes a layer with data of its own.
          await scatter(vol, rng, 8);
          const t0 = performance.now();
          await createSnapshots(pool, [{ volume: 'v', snapshot: `s${i}` }]);
          snaps.push(performance.now() - t0);
        }
        out.push(result(c, written, 'snapshot create', snaps));
        log(`create latency: snapshot ${describe(out[out.length - 1]!)}`);
        const clones: number[] = [];
        const infos: number[] = [];
        for (let i = 0; i < count; i++) {
          let t0 = performance.now();
          await cloneVolume(pool, { volume: 'v', snapshot: `s${i}` }, `c${i}`);
          clones.push(performance.now() - t0);
          // Every fifth (and the last): on a huge volume each takes seconds, and the trend is what matters.
          if (i % 5 === 0 || i === count - 1) {
            t0 = performance.now();
            await pool.volumeInfo(`c${i}`);
            infos.push(performance.now() - t0);
          }
        }
        out.push({ ...result(c, written, 'clone create', clones), infoMedianMs: median(infos) });
        log(`create latency: clone ${describe(out[out.length - 1]!)}`);
      } finally {
        await vol.close();
      }
    } finally {
      await pool.close();
      fs.rmSync(file, { force: true });
    }
  }
  return out;
}

function result(c: CreateCase, written: number, op: CreateResult['op'], samplesMs: number[]): CreateResult {
  return { size: c.size, written, op, count: samplesMs.length, firstMs: samplesMs[0] ?? NaN, medianMs: median(samplesMs), maxMs: Math.max(...samplesMs), samplesMs };
}

function describe(r: CreateResult): string {
  return `${r.size} bytes: median ${r.medianMs.toFixed(2)} ms, max ${r.maxMs.toFixed(2)} ms, first ${r.firstMs.toFixed(2)} ms`;
}

async function spread(vol: BlockDevice, c: CreateCase): Promise<void> {
  const buf = Buffer.alloc(c.piece);
  for (let i = 0; i < buf.length; i += 4) buf.writeUInt32LE((i * 2654435761) >>> 0, i);
  const stride = Math.floor(c.size / c.pieces / c.piece) * c.piece;
  const offsets = Array.from({ length: c.pieces }, (_, i) => i * stride);
  await inParallel(offsets, 16, (off) => vol.write(buf, off));
  await vol.flush();
}

async function scatter(vol: BlockDevice, rng: Rng, n: number): Promise<void> {
  const buf = Buffer.alloc(KIB4, 0x5a);
  const blocks = Math.floor(vol.size / KIB4);
  for (let i = 0; i < n; i++) await vol.write(buf, rng.below(blocks) * KIB4);
}

/** Runs `fn` over `items` with at most `depth` at once. */
export async function inParallel<T>(items: readonly T[], depth: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(depth, items.length) }, worker));
}
