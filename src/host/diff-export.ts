import type { Writable } from 'node:stream';
import { loadXxhash } from '../blockdev/xxhash.js';
import type { Pool } from '../qcowlike/index.js';
import { diffRanges, openFrozen, type DiffExtent, type SnapshotRef } from '../snapshot/index.js';
import { DiffEncoder, MAX_DATA_RECORD, type DiffPoint, type DiffTotals } from '../snapshot/diff-stream.js';
import { findSnapshot } from './diff-points.js';
import { runsOf } from './image-copy.js';

export interface ExportDiffRequest {
  volume: string;
  /** The base snapshot's name; null for a full stream. */
  from: string | null;
  to: string;
}

export interface ExportDiffResult extends DiffTotals {
  volume: string;
  from: { name: string; uuid: string } | null;
  to: { name: string; uuid: string };
  size: number;
  /** Bytes of the stream. */
  streamBytes: number;
}

/**
 * Writes the diff stream from snapshot `from` (or from nothing) to snapshot
 * `to` into `out`: the changed ranges from metadata (diffRanges), the bytes
 * read from the frozen TO. Zero ranges, and zero runs inside changed data,
 * become zero records, never bytes. `out` is not ended here.
 */
export async function exportDiff(pool: Pool, poolName: string, req: ExportDiffRequest, out: Writable, onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<ExportDiffResult> {
  const to = await findSnapshot(pool, poolName, req.volume, req.to);
  const from = req.from === null ? null : await findSnapshot(pool, poolName, req.volume, req.from);
  const ends = { from: from ? point(from) : null, to: point(to), toSource: { volume: req.volume, snapshot: to.name }, size: to.size, volume: req.volume };
  const written = await writeDiff(pool, ends, diffRanges(pool, req.volume, from?.name ?? null, to.name), out, { onProgress, signal });
  return { volume: req.volume, from: from ? point(from) : null, to: point(to), size: to.size, ...written };
}

function point(s: { name: string; uuid: string }): DiffPoint {
  return { name: s.name, uuid: s.uuid };
}

/** The two ends of a diff stream, and the frozen point TO is read from (a snapshot or a template). */
export interface DiffEnds {
  from: DiffPoint | null;
  to: DiffPoint;
  toSource: SnapshotRef | { template: string };
  size: number;
  /** The volume named in the header, for messages. */
  volume: string;
}

/**
 * The diff stream of the changed `ranges` between two frozen points of a
 * pool (a clone's first snapshot against the template it came from, too),
 * the bytes read from TO. With `after`, only the records from that volume
 * offset on: the rest of a stream a receiver holds up to there.
 */
export async function writeDiff(pool: Pool, ends: DiffEnds, ranges: AsyncIterable<DiffExtent>, out: Writable, opts: { after?: number; onProgress?: (done: number, total: number) => void; signal?: AbortSignal } = {}): Promise<DiffTotals & { streamBytes: number }> {
  await loadXxhash();
  const { onProgress, signal } = opts;
  const after = opts.after ?? 0;
  const enc = new DiffEncoder({ size: ends.size, from: ends.from, to: ends.to, volume: ends.volume, created: new Date().toISOString() });
  let streamBytes = 0;
  const put = async (bufs: Buffer[]): Promise<void> => {
    for (const b of bufs) {
      // A reader that went away (a closed socket or pipe) ends the export here, rather than leaving it waiting for a drain that never comes.
      if (out.destroyed || out.writableEnded) throw new Error('the stream was closed before the export ended');
      streamBytes += b.length;
      if (!out.write(b)) await drained(out);
    }
  };
  await put([enc.start()]);
  const frozen = await openFrozen(pool, ends.toSource);
  try {
    for await (const ext of ranges) {
      // A range past TO's size (a volume that shrank since FROM) has nothing to say: the size in the header cuts it.
      const end = Math.min(ext.offset + ext.length, ends.size);
      const start = Math.max(ext.offset, after);
      if (end <= start) continue;
      if (ext.kind === 'zero') await put([enc.zero(start, end - start)]);
      else {
        for (let pos = start; pos < end; pos += MAX_DATA_RECORD) {
          if (signal?.aborted) throw new Error('interrupted');
          // A fresh buffer each time: the stream may still hold the last one.
          const chunk = Buffer.allocUnsafe(Math.min(MAX_DATA_RECORD, end - pos));
          await frozen.read(chunk, pos);
          for (const run of runsOf(chunk)) {
            await put(run.zero ? [enc.zero(pos + run.offset, run.length)] : enc.data(pos + run.offset, chunk.subarray(run.offset, run.offset + run.length)));
          }
          onProgress?.(pos + chunk.length, ends.size);
        }
      }
      onProgress?.(end, ends.size);
    }
  } finally {
    await frozen.close();
  }
  await put([enc.end()]);
  onProgress?.(ends.size, ends.size);
  return { streamBytes, ...enc.totals() };
}

/** Waits for a stream to take more, or fails with its error (a reader that went away). */
export function drained(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    if (out.destroyed) return reject(new Error('the stream was closed before the export ended'));
    const done = (err?: Error): void => {
      out.off('drain', ok);
      out.off('error', done);
      out.off('close', closed);
      if (err) reject(err);
      else resolve();
    };
    const ok = (): void => done();
    const closed = (): void => done(new Error('the stream was closed before the export ended'));
    out.on('drain', ok);
    out.on('error', done);
    out.on('close', closed);
  });
}
