import fs from 'node:fs';
import { sharedAlignedBuffers, type AlignedBuffers, type SlotPool } from './aligned-buffers.js';
import { BlockDeviceError, fromSystemError, type BlockOp } from './errors.js';
import { RangeLock } from './range-lock.js';

/**
 * Requests to a file opened with O_DIRECT, which takes only aligned offsets,
 * lengths and memory addresses. Every request is bounced through aligned
 * slots; unaligned edges are read-modify-write of the edge sectors. Writes
 * (and punches) hold an exclusive lock over the sectors they touch, so two
 * writes that share a sector but not a byte never write back each other's
 * stale copy of it. Reads take no lock: a sector rewritten by a
 * read-modify-write keeps the bytes outside the write unchanged.
 *
 * Everything goes through libuv's pool: each request reaches the disk, and a
 * synchronous call on the main thread would serialise the queue depth.
 */
export class DirectIo {
  private readonly lock = new RangeLock();

  constructor(
    private readonly name: string,
    private readonly fd: () => number,
    /** Logical block: the unit of offsets, lengths and memory alignment. */
    readonly alignment: number,
    private readonly buffers: AlignedBuffers = sharedAlignedBuffers(),
  ) {}

  read(buf: Uint8Array, offset: number): Promise<void> {
    const pool = this.wholePool(offset, buf.length);
    const slot = pool?.tryTake();
    if (pool && slot) {
      const n = buf.length;
      return this.transfer('read', slot, n, offset, offset, n).then(
        () => {
          buf.set(slot.subarray(0, n));
          pool.give(slot);
        },
        (err: unknown) => {
          pool.give(slot);
          throw err;
        },
      );
    }
    return settle(this.pieces(offset, buf.length).map(([a, b]) => this.readPiece(buf, offset, a, b)));
  }

  write(buf: Uint8Array, offset: number): Promise<void> {
    const held = this.lockSectors(offset, buf.length);
    // Uncontended, the lock is granted at once: no extra turn of the event loop before the I/O starts.
    if (typeof held !== 'function') return held.then((release) => this.writeHeld(buf, offset, release));
    return this.writeHeld(buf, offset, held);
  }

  private writeHeld(buf: Uint8Array, offset: number, release: () => void): Promise<void> {
    const pool = this.wholePool(offset, buf.length);
    const slot = pool?.tryTake();
    let done: Promise<void>;
    if (pool && slot) {
      slot.set(buf);
      done = this.transfer('write', slot, buf.length, offset, offset, buf.length).then(
        () => pool.give(slot),
        (err: unknown) => {
          pool.give(slot);
          throw err;
        },
      );
    } else {
      done = settle(this.pieces(offset, buf.length).map(([a, b]) => this.writePiece(buf, offset, a, b)));
    }
    return done.then(release, (err: unknown) => {
      release();
      throw err;
    });
  }

  /**
   * The pool whose one slot holds the request as it is — aligned at both
   * ends, no edge to read first — or undefined when it must be cut into pieces.
   */
  private wholePool(offset: number, length: number): SlotPool | undefined {
    if (offset % this.alignment !== 0 || length % this.alignment !== 0) return undefined;
    const pool = this.buffers.poolFor(length);
    return length <= pool.slotSize ? pool : undefined;
  }

  /** Runs `fn` (a hole punch) holding the sectors of the range, so no read-modify-write brings back what it zeroes. */
  async exclusive<T>(offset: number, length: number, fn: () => Promise<T>): Promise<T> {
    const release = await this.lockSectors(offset, length);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private lockSectors(offset: number, length: number): (() => void) | Promise<() => void> {
    return this.lock.acquire(Math.floor(offset / this.alignment), Math.floor((offset + length - 1) / this.alignment), true);
  }

  /** The aligned span of [offset, offset+length) cut into [start, end) pieces that each fit one slot. */
  private pieces(offset: number, length: number): [number, number][] {
    const al = this.alignment;
    const start = Math.floor(offset / al) * al;
    const end = Math.ceil((offset + length) / al) * al;
    const pool = this.buffers.poolFor(end - start);
    const out: [number, number][] = [];
    for (let a = start; a < end; a += pool.slotSize) out.push([a, Math.min(end, a + pool.slotSize)]);
    return out;
  }

  private async readPiece(buf: Uint8Array, offset: number, a: number, b: number): Promise<void> {
    const pool = this.buffers.poolFor(b - a);
    const slot = await pool.take();
    try {
      await this.transfer('read', slot, b - a, a, offset, buf.length);
      const lo = Math.max(a, offset);
      const hi = Math.min(b, offset + buf.length);
      buf.set(slot.subarray(lo - a, hi - a), lo - offset);
    } finally {
      pool.give(slot);
    }
  }

  private async writePiece(buf: Uint8Array, offset: number, a: number, b: number): Promise<void> {
    const al = this.alignment;
    const pool = this.buffers.poolFor(b - a);
    const slot = await pool.take();
    try {
      const lo = Math.max(a, offset);
      const hi = Math.min(b, offset + buf.length);
      const head = lo > a;
      const tail = hi < b && !(head && b - a === al);
      if (head || tail) {
        const edges: Promise<void>[] = [];
        if (head) edges.push(this.transfer('read', slot, al, a, offset, buf.length));
        if (tail) edges.push(this.transfer('read', slot.subarray(b - a - al), al, b - al, offset, buf.length));
        await settle(edges);
      }
      slot.set(buf.subarray(lo - offset, hi - offset), lo - a);
      await this.transfer('write', slot, b - a, a, offset, buf.length);
    } finally {
      pool.give(slot);
    }
  }

  /** Moves `length` bytes between `mem` and the file at `position`; errors name the caller's request. */
  private transfer(op: BlockOp, mem: Buffer, length: number, position: number, reqOffset: number, reqLength: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const step = (done: number): void => {
        const cb = (err: NodeJS.ErrnoException | null, n: number): void => {
          if (err) return reject(fromSystemError(err, this.name, op, reqOffset, reqLength));
          if (n === 0) return reject(new BlockDeviceError('EIO', this.name, op, 'unexpected end of file (was the file truncated?)', position + done, length - done));
          if (done + n < length) return step(done + n);
          resolve();
        };
        if (op === 'read') fs.read(this.fd(), mem, done, length - done, position + done, cb);
        else fs.write(this.fd(), mem, done, length - done, position + done, cb);
      };
      step(0);
    });
  }
}

/** Waits for every piece (so none still holds a slot or the lock), then rejects with the first error. */
async function settle(pieces: Promise<void>[]): Promise<void> {
  if (pieces.length === 1) return pieces[0];
  const results = await Promise.allSettled(pieces);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
