import type { BlockDevice } from '../blockdev/index.js';
import { loadXxhash } from '../blockdev/xxhash.js';
import { CHUNK, inParallel, runsOf } from '../host/image-copy.js';
import { volumeRuns, type Mappable } from '../host/volume-runs.js';
import { paced } from '../snapshot/pace.js';
import { subtract, type Span } from './nbd-push-ranges.js';
import type { PushTarget } from './nbd-push-target.js';

/** Chunks in flight at once: enough to keep a remote export busy (nbdcopy keeps 16 MiB in flight; this keeps 32). */
const DEPTH = 8;
const HASH_SEED = 0x50555348n;
const ZEROES = Buffer.alloc(CHUNK);

/** copy and verify (cold); copy, then ready once the target is in step and mirrored (online). */
export type PushPhase = 'copy' | 'verify' | 'ready';

export interface PushOptions {
  /** Bytes of data read and sent per second at most; unlimited when absent. */
  rate?: number;
  signal?: AbortSignal;
  onProgress?(phase: PushPhase, done: number, total: number): void;
  /** Called before each chunk; throws to stop the push (a cold push whose volume was taken into use). */
  check?(): void;
}

export interface PushResult {
  size: number;
  /** Data sent as writes. */
  bytesWritten: number;
  /** Zeroes the target was asked to make (write-zeroes requests, no data; unless zeroesSentAsData). */
  bytesZeroed: number;
  /** The target offers no write-zeroes: bytesZeroed went as zero bytes. */
  zeroesSentAsData: boolean;
  /** Zeroes left alone because the target said they read as zero already. */
  bytesAlreadyZero: number;
  /** Bytes read back from the target and compared. */
  bytesVerified: number;
  /** Wall-clock seconds of the copy (to the target's flush) and of the read-back. */
  copySeconds: number;
  verifySeconds: number;
}

interface Task {
  offset: number;
  length: number;
  data: boolean;
}

interface Sum {
  offset: number;
  length: number;
  hash: bigint;
}

/**
 * Pushes what `source` reads into `target`, sparse both ways: only the runs
 * block status calls data are read; zero granules inside them and the
 * source's zero runs and holes are zeroed on the target without bytes on the
 * wire, and not even that where the target said it reads zeroes already.
 * Several chunks are in flight, each read verified by the source's own
 * checksums and hashed; after a flush of the target every chunk is read back
 * and compared with that hash, and the rest checked to read as zeroes. The
 * first mismatch fails the push, naming its offset.
 */
export async function pushVolume(source: BlockDevice & Mappable, target: PushTarget, opts: PushOptions = {}): Promise<PushResult> {
  const h = await loadXxhash();
  const size = source.size;
  const sums: Sum[] = [];
  const zeroRuns: Span[] = [];
  const result: PushResult = { size, bytesWritten: 0, bytesZeroed: 0, zeroesSentAsData: target.zeroesAsData, bytesAlreadyZero: 0, bytesVerified: 0, copySeconds: 0, verifySeconds: 0 };
  const started = performance.now();
  const buffers = Array.from({ length: DEPTH }, () => Buffer.allocUnsafe(CHUNK));
  const pace = paced({ ...(opts.rate !== undefined ? { rateBytesPerSec: opts.rate } : {}), ...(opts.signal ? { signal: opts.signal } : {}) }, 1);
  let done = 0;
  let moved = 0;
  const zero = async (offset: number, length: number): Promise<void> => {
    for (const part of target.notZero(offset, length)) {
      await target.zero(part.offset, part.length);
      result.bytesZeroed += part.length;
    }
  };

  async function* tasks(): AsyncGenerator<Task> {
    for await (const run of volumeRuns(source)) {
      if (run.zero) {
        zeroRuns.push({ offset: run.offset, length: run.length });
        yield { offset: run.offset, length: run.length, data: false };
      } else for (let pos = run.offset; pos < run.offset + run.length; pos += CHUNK) yield { offset: pos, length: Math.min(CHUNK, run.offset + run.length - pos), data: true };
    }
  }

  opts.onProgress?.('copy', 0, size);
  await inParallel(
    tasks(),
    async (task, slot) => {
      opts.check?.();
      opts.signal?.throwIfAborted();
      if (!task.data) await zero(task.offset, task.length);
      else {
        // Held back before the read, so that no chunk goes out ahead of the rate (the first ones included).
        moved += task.length;
        await pace(moved, 0);
        const chunk = buffers[slot]!.subarray(0, task.length);
        await source.read(chunk, task.offset);
        sums.push({ offset: task.offset, length: task.length, hash: h.h64Raw(chunk, HASH_SEED) });
        const writes: Promise<void>[] = [];
        for (const piece of runsOf(chunk)) {
          const at = task.offset + piece.offset;
          if (piece.zero) writes.push(zero(at, piece.length));
          else {
            writes.push(target.write(chunk.subarray(piece.offset, piece.offset + piece.length), at));
            result.bytesWritten += piece.length;
          }
        }
        await Promise.all(writes);
      }
      opts.onProgress?.('copy', (done += task.length), size);
    },
    opts.signal,
    DEPTH,
  );
  result.bytesAlreadyZero = size - result.bytesWritten - result.bytesZeroed;
  await target.flush();
  const copied = performance.now();
  result.copySeconds = seconds(copied - started);
  await verify(source, target, sums, zeroRuns, buffers, result, opts, (b) => h.h64Raw(b, HASH_SEED));
  result.verifySeconds = seconds(performance.now() - copied);
  return result;
}

async function verify(source: BlockDevice, target: PushTarget, sums: Sum[], zeroRuns: Span[], buffers: Buffer[], result: PushResult, opts: PushOptions, hash: (b: Buffer) => bigint): Promise<void> {
  const size = source.size;
  // What the source reads as zeroes must read as zeroes there too: block status first, reading only what it does not vouch for.
  const targetZero = await target.zeroSpans(size);
  const unvouched = subtract(zeroRuns, targetZero);
  const items: Task[] = [...sums.map((s) => ({ offset: s.offset, length: s.length, data: true })), ...splitChunks(unvouched)];
  items.sort((a, b) => a.offset - b.offset);
  const byOffset = new Map(sums.map((s) => [s.offset, s.hash]));
  const total = items.reduce((n, t) => n + t.length, 0);
  let done = 0;
  let bad: number | undefined;
  opts.onProgress?.('verify', 0, total);
  await inParallel(
    items.values(),
    async (task, slot) => {
      opts.signal?.throwIfAborted();
      const chunk = buffers[slot]!.subarray(0, task.length);
      await target.read(chunk, task.offset);
      const ok = task.data ? hash(chunk) === byOffset.get(task.offset) : chunk.equals(ZEROES.subarray(0, chunk.length));
      if (!ok) bad = Math.min(bad ?? Infinity, await firstDifference(source, chunk, task.offset));
      result.bytesVerified += task.length;
      opts.onProgress?.('verify', (done += task.length), total);
    },
    opts.signal,
    DEPTH,
  );
  if (bad !== undefined) throw new Error(`${target.uri} does not read back what was pushed: the first bad byte is at offset ${bad}`);
}

/** The offset of the first byte of `got` (read from the target at `offset`) that differs from the source. */
async function firstDifference(source: BlockDevice, got: Buffer, offset: number): Promise<number> {
  const want = Buffer.allocUnsafe(got.length);
  await source.read(want, offset);
  for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) return offset + i;
  // The source changed since it was pushed (it was in use after all): the chunk is what is wrong.
  return offset;
}

function splitChunks(ranges: Span[]): Task[] {
  const out: Task[] = [];
  for (const r of ranges) for (let pos = r.offset; pos < r.offset + r.length; pos += CHUNK) out.push({ offset: pos, length: Math.min(CHUNK, r.offset + r.length - pos), data: false });
  return out;
}

function seconds(ms: number): number {
  return Math.round(ms / 10) / 100;
}
