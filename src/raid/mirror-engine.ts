import { RangeLock } from '../blockdev/range-lock.js';
import { BlockDeviceError, pieces, type Piece } from '../blockdev/index.js';
import { settleAll, type Engine, type MemberIO, type Mismatch, type ScrubPart } from './engine.js';
import type { MirrorLayout } from './levels/index.js';

/**
 * RAID 0, 1 and 10: every write goes to each replica of its chunks in
 * parallel; a read takes one readable replica, spreading chunks over replicas.
 * Writers lock their chunk only so a rebuild or resync of that chunk cannot
 * copy old data over a newer write.
 */
export class MirrorEngine implements Engine {
  readonly capacity: number;
  /** Per chunk (mirrors) or stripe (parity), exclusive: a row's read-modify-write or rebuild never interleaves with another writer of it. */
  private readonly locks = new RangeLock();

  constructor(
    private readonly layout: MirrorLayout,
    private readonly io: MemberIO,
    private readonly name: string,
  ) {
    this.capacity = layout.chunks * layout.chunk;
  }

  rowsOf(offset: number, length: number): [number, number] {
    const C = this.layout.chunk;
    const first = Math.floor(offset / C);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / C);
    return [this.layout.row(first, 0), this.layout.row(last, this.layout.copies - 1) + 1];
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    const ps = pieces(this.layout.chunk, offset, buf.length);
    if (ps.length === 1) return this.readPiece(buf, ps[0]!, -1);
    return settleAll(ps.map((p) => this.readPiece(buf, p, -1)));
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    await settleAll(pieces(this.layout.chunk, offset, buf.length).map((p) => this.locks.with(p.chunk, p.chunk, true, () => this.writePiece(buf.subarray(p.at, p.at + p.length), p))));
  }

  async zero(offset: number, length: number): Promise<void> {
    const { chunk: C, copies } = this.layout;
    await settleAll(
      pieces(C, offset, length).map((p) =>
        this.locks.with(p.chunk, p.chunk, true, async () => {
          const jobs: Promise<void>[] = [];
          for (let r = 0; r < copies; r++) {
            const m = this.layout.member(p.chunk, r);
            if (this.io.writable(m)) jobs.push(this.io.zero(m, this.layout.row(p.chunk, r) * C + p.within, p.length));
          }
          if (jobs.length === 0) throw this.lost('writeZeroes', p);
          await settleAll(jobs);
        }),
      ),
    );
  }

  async scrub(r0: number, r1: number, repair: boolean): Promise<ScrubPart> {
    const part: ScrubPart = { mismatches: [], unchecked: 0 };
    for (const c of this.chunksInRows(r0, r1)) {
      const m = await this.locks.with(c, c, true, () => this.scrubChunk(c, repair));
      if (m === 'unchecked') part.unchecked += this.layout.chunk;
      else if (m) part.mismatches.push(m);
    }
    return part;
  }

  async rebuild(member: number, r0: number, r1: number): Promise<void> {
    const { chunk: C, copies } = this.layout;
    const buf = this.io.take();
    try {
      for (let row = r0; row < r1; row++) {
        const c = this.layout.chunkAt(member, row);
        if (c < 0) continue;
        await this.locks.with(c, c, true, async () => {
          // Another replica first; the member itself is readable here only when hot-replaced (from the old device).
          const order = Array.from({ length: copies }, (_, r) => r).sort((a, b) => Number(this.layout.member(c, a) === member) - Number(this.layout.member(c, b) === member));
          for (const r of order) {
            const src = this.layout.member(c, r);
            if (!this.io.readable(src, this.layout.row(c, r))) continue;
            await this.io.read(src, buf, this.layout.row(c, r) * C);
            await this.io.write(member, buf, row * C);
            return;
          }
          throw new BlockDeviceError('EIO', this.name, 'read', `no readable copy of chunk ${c} to rebuild member ${member} from`);
        });
      }
    } finally {
      this.io.give(buf);
    }
  }

  copies(): number {
    return this.layout.copies;
  }

  async readCopy(buf: Uint8Array, offset: number, copy: number): Promise<void> {
    if (!Number.isInteger(copy) || copy < 0 || copy >= this.layout.copies) {
      throw new BlockDeviceError('EINVAL', this.name, 'read', `no copy ${copy} (the array keeps ${this.layout.copies})`, offset, buf.length);
    }
    await settleAll(pieces(this.layout.chunk, offset, buf.length).map((p) => this.readPiece(buf, p, copy)));
  }

  async repair(good: Uint8Array, offset: number, dryRun = false): Promise<Set<number>> {
    const fixed = new Set<number>();
    const { chunk: C, copies } = this.layout;
    const scratch = this.io.take();
    try {
      for (const p of pieces(C, offset, good.length)) {
        const want = good.subarray(p.at, p.at + p.length);
        await this.locks.with(p.chunk, p.chunk, true, async () => {
          for (let r = 0; r < copies; r++) {
            const m = this.layout.member(p.chunk, r);
            const row = this.layout.row(p.chunk, r);
            if (!this.io.readable(m, row) || !this.io.writable(m)) continue;
            const have = scratch.subarray(0, p.length);
            await this.io.read(m, have, row * C + p.within);
            if (Buffer.compare(have, want) === 0) continue;
            if (!dryRun) await this.io.write(m, want, row * C + p.within);
            fixed.add(m);
          }
        });
      }
    } finally {
      this.io.give(scratch);
    }
    return fixed;
  }

  /** `copy` −1: any readable replica, starting from one chosen by the chunk so mirrors share reads. */
  private readPiece(buf: Uint8Array, p: Piece, copy: number): Promise<void> {
    const { chunk: C, copies } = this.layout;
    const dst = p.at === 0 && p.length === buf.length ? buf : buf.subarray(p.at, p.at + p.length);
    if (copy >= 0) {
      // Numbered from the replica a normal read starts with, so that copy 0 is the normal path and the
      // alternatives a checksum failure tries (1 …) are the other replicas, whichever chunk it is.
      const r = (p.chunk + copy) % copies;
      const m = this.layout.member(p.chunk, r);
      const row = this.layout.row(p.chunk, r);
      if (!this.io.readable(m, row)) return Promise.reject(new BlockDeviceError('EIO', this.name, 'read', `copy ${copy} is on member ${m}, which is not in sync`, p.chunk * C + p.within, p.length));
      return this.io.read(m, dst, row * C + p.within);
    }
    const start = p.chunk % copies;
    for (let i = 0; i < copies; i++) {
      const r = (start + i) % copies;
      const m = this.layout.member(p.chunk, r);
      const row = this.layout.row(p.chunk, r);
      if (this.io.readable(m, row)) return this.io.read(m, dst, row * C + p.within);
    }
    return Promise.reject(this.lost('read', p));
  }

  private async writePiece(data: Uint8Array, p: Piece): Promise<void> {
    const { chunk: C, copies } = this.layout;
    if (copies === 1) {
      const m = this.layout.member(p.chunk, 0);
      if (!this.io.writable(m)) throw this.lost('write', p);
      return this.io.write(m, data, this.layout.row(p.chunk, 0) * C + p.within);
    }
    const jobs: Promise<void>[] = [];
    for (let r = 0; r < copies; r++) {
      const m = this.layout.member(p.chunk, r);
      if (this.io.writable(m)) jobs.push(this.io.write(m, data, this.layout.row(p.chunk, r) * C + p.within));
    }
    if (jobs.length === 0) throw this.lost('write', p);
    await settleAll(jobs);
  }

  /**
   * Reads every readable replica. With three or more, a strict majority that
   * agrees is taken as right (md cannot tell); otherwise the first replica
   * wins, as md does. The pool's checksums settle the two-copy case through
   * the redundancy hook.
   */
  private async scrubChunk(c: number, repair: boolean): Promise<Mismatch | 'unchecked' | undefined> {
    const { chunk: C, copies } = this.layout;
    const held: Array<{ member: number; row: number; buf: Buffer }> = [];
    try {
      for (let r = 0; r < copies; r++) {
        const m = this.layout.member(c, r);
        const row = this.layout.row(c, r);
        if (!this.io.readable(m, row)) continue;
        const buf = this.io.take();
        held.push({ member: m, row, buf });
        await this.io.read(m, buf, row * C);
      }
      if (held.length < 2) return 'unchecked';
      const agree = held.map((h) => held.filter((o) => Buffer.compare(h.buf, o.buf) === 0).length);
      if (agree[0] === held.length) return undefined;
      const best = agree.indexOf(Math.max(...agree));
      const source = agree[best]! * 2 > held.length ? held[best]! : held[0]!;
      const differ = held.filter((h) => Buffer.compare(h.buf, source.buf) !== 0);
      if (repair) for (const h of differ) if (this.io.writable(h.member)) await this.io.write(h.member, source.buf, h.row * C);
      return { offset: c * C, length: C, members: differ.map((h) => h.member), repaired: repair };
    } finally {
      for (const h of held) this.io.give(h.buf);
    }
  }

  private chunksInRows(r0: number, r1: number): number[] {
    const seen = new Set<number>();
    for (let row = r0; row < r1; row++) {
      for (let m = 0; m < this.layout.members; m++) {
        const c = this.layout.chunkAt(m, row);
        if (c >= 0) seen.add(c);
      }
    }
    return [...seen].sort((a, b) => a - b);
  }

  private lost(op: 'read' | 'write' | 'writeZeroes', p: Piece): BlockDeviceError {
    return new BlockDeviceError('EIO', this.name, op, `no member holding chunk ${p.chunk} is available`, p.chunk * this.layout.chunk + p.within, p.length);
  }
}
