import { setTimeout as sleep } from 'node:timers/promises';
import { PassThroughDevice, RangeLock, type BlockDevice, type WriteOptions, type WriteZeroesOptions } from '../blockdev/index.js';
import { runsOf } from '../host/image-copy.js';

/** A range of the source the background copy must bring over: data is read and written, zero is made zero on the target. */
export interface CopyRange {
  offset: number;
  length: number;
  kind: 'data' | 'zero';
}

export interface MirrorOptions {
  /** The target reads zeroes wherever nothing was written (a new thin volume): zero ranges and zero runs are not written. */
  targetZeroed: boolean;
  /** Told once, when a target error stops the mirror. */
  onFail?: (err: Error) => void;
}

export interface CopyOptions {
  /** Bytes per second of copying (mirrored writes are not counted or held back). */
  rate?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

/** Ranges are locked at this grain: a mirrored write and the copy of its chunk never interleave. */
const GRAIN = 64 * 1024;
/** The copy moves this much under one lock: small enough that a guest write waits for little. */
const COPY_CHUNK = 1024 * 1024;
/** Copy chunks in flight at once. */
const COPY_DEPTH = 4;

/**
 * A write-blocking mirror (QEMU's `copy-mode=write-blocking`): reads come
 * from the source, which stays authoritative; every write, discard and
 * write-zeroes goes to both and is acknowledged once both have it, so the
 * copy converges however fast the guest writes. `copy` brings over what
 * was there before, chunk by chunk, each under an exclusive range lock
 * that mirrored writes to the same range also take, so a chunk read from
 * the source before a guest write can never land on the target after it.
 *
 * A target error never reaches the guest: the mirror stops (`failed`),
 * the request it hit completes from the source alone, and from then on the
 * device is the source only. The migration above gives up; the source is
 * as it would have been without it.
 */
export class MirrorDevice extends PassThroughDevice {
  private readonly locks = new RangeLock();
  private mirroring = true;
  private failure: Error | undefined;

  constructor(
    source: BlockDevice,
    readonly target: BlockDevice,
    private readonly opts: MirrorOptions,
  ) {
    super(source);
    if (target.size < source.size) throw new Error(`${target.name} (${target.size} bytes) is smaller than ${source.name} (${source.size} bytes)`);
  }

  /** Why the mirror stopped, when a target error stopped it. */
  get failed(): Error | undefined {
    return this.failure;
  }

  /** The target is being kept in step with the source. */
  get active(): boolean {
    return this.mirroring;
  }

  /** Stops mirroring: from now on requests go to the source only (a cancelled or failed migration). */
  detach(): void {
    this.mirroring = false;
  }

  override write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    return this.both(offset, buf.length, (d) => d.write(buf, offset, opts));
  }

  override discard(offset: number, length: number): Promise<void> {
    return this.both(offset, length, (d) => d.discard(offset, length));
  }

  override writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    return this.both(offset, length, (d) => d.writeZeroes(offset, length, opts));
  }

  override async flush(): Promise<void> {
    if (!this.mirroring) return this.inner.flush();
    const [s, t] = await Promise.allSettled([this.inner.flush(), this.target.flush()]);
    if (t.status === 'rejected') this.fail(t.reason);
    if (s.status === 'rejected') throw s.reason;
  }

  /**
   * Copies `ranges` of the source to the target, COPY_DEPTH chunks at a
   * time, at `rate`. Throws when the mirror failed or the signal fired;
   * what was copied stays copied.
   */
  async copy(ranges: AsyncIterable<CopyRange>, total: number, opts: CopyOptions = {}): Promise<number> {
    const started = performance.now();
    let done = 0;
    let copied = 0;
    const inFlight = new Set<Promise<void>>();
    const one = async (r: CopyRange): Promise<void> => {
      await this.copyChunk(r);
      done += r.length;
      if (r.kind === 'data') copied += r.length;
      opts.onProgress?.(done, total);
    };
    let failure: unknown;
    for await (const range of ranges) {
      for (let pos = range.offset; pos < range.offset + range.length; pos += COPY_CHUNK) {
        if (failure !== undefined) break;
        opts.signal?.throwIfAborted();
        if (this.failure) throw this.failure;
        const chunk: CopyRange = { offset: pos, length: Math.min(COPY_CHUNK, range.offset + range.length - pos), kind: range.kind };
        const p = one(chunk).catch((err: unknown) => void (failure ??= err));
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
        if (inFlight.size >= COPY_DEPTH) await Promise.race(inFlight);
        if (opts.rate !== undefined && opts.rate > 0) {
          const due = ((done + COPY_DEPTH * COPY_CHUNK) / opts.rate) * 1000 - (performance.now() - started);
          // A cancel ends the wait with its own reason ("job 3 was cancelled"), not a timer's AbortError.
          if (due > 0) await sleep(due, undefined, { signal: opts.signal }).catch((err: unknown) => (opts.signal?.throwIfAborted(), Promise.reject(err)));
        }
      }
      if (failure !== undefined) break;
    }
    await Promise.all(inFlight);
    if (failure !== undefined) throw failure;
    if (this.failure) throw this.failure;
    opts.signal?.throwIfAborted();
    return copied;
  }

  private async copyChunk(r: CopyRange): Promise<void> {
    const release = await this.locks.acquire(Math.floor(r.offset / GRAIN), Math.floor((r.offset + r.length - 1) / GRAIN), true);
    try {
      if (!this.mirroring) throw this.failure ?? new Error('the mirror was stopped');
      if (r.kind === 'zero') {
        if (!this.opts.targetZeroed) await this.onTarget(() => this.target.writeZeroes(r.offset, r.length));
        return;
      }
      // A source read error fails the copy (and so the migration), not the mirror.
      const buf = Buffer.allocUnsafe(r.length);
      await this.inner.read(buf, r.offset);
      for (const run of runsOf(buf)) {
        if (run.zero && this.opts.targetZeroed) continue;
        const at = r.offset + run.offset;
        await this.onTarget(() => (run.zero ? this.target.writeZeroes(at, run.length) : this.target.write(buf.subarray(run.offset, run.offset + run.length), at)));
      }
    } finally {
      release();
    }
  }

  /** A target request of the copy: its error stops the mirror. */
  private async onTarget(op: () => Promise<void>): Promise<void> {
    try {
      await op();
    } catch (err) {
      this.fail(err);
      throw this.failure;
    }
  }

  private async both(offset: number, length: number, op: (d: BlockDevice) => Promise<void>): Promise<void> {
    if (!this.mirroring || length === 0) return op(this.inner);
    const release = await this.locks.acquire(Math.floor(offset / GRAIN), Math.floor((offset + length - 1) / GRAIN), true);
    try {
      // Stopped while this request waited for its lock: the source alone.
      if (!this.mirroring) return await op(this.inner);
      const [s, t] = await Promise.allSettled([op(this.inner), op(this.target)]);
      if (t.status === 'rejected') this.fail(t.reason);
      if (s.status === 'rejected') throw s.reason;
    } finally {
      release();
    }
  }

  private fail(reason: unknown): void {
    if (!this.mirroring) return;
    this.mirroring = false;
    this.failure = reason instanceof Error ? reason : new Error(String(reason));
    this.opts.onFail?.(this.failure);
  }
}
