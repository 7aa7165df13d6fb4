import { RangeLock } from '../blockdev/range-lock.js';
import { BlockDeviceError } from '../blockdev/index.js';
import { settleAll, type Engine, type MemberIO, type Mismatch, type ScrubPart } from './engine.js';
import { GF_LOG } from './gf256.js';
import type { ParityLayout } from './levels/index.js';
import { reconstruct } from './reconstruct.js';
import { computeP, computePQ, xorInto, xorQTerm } from './syndrome.js';

/** A piece of a request inside one data chunk of one stripe. */
interface Piece {
  stripe: number;
  index: number;
  within: number;
  length: number;
  at: number;
}

interface Touch {
  index: number;
  src: Uint8Array;
}

/** Blocks of one stripe segment: d data, then P, then Q; `owned` go back to the pool. */
interface Loaded {
  blocks: Buffer[];
  owned: Buffer[];
}

let zeroes: Buffer | undefined;

/**
 * RAID 5 and RAID 6. Every write holds its stripe's lock (parity is a
 * read-modify-write of shared state). A stripe segment that every data block
 * covers is written without reading anything; a smaller one reads either the
 * old data and parity it changes (read-modify-write) or the data it does not
 * change (reconstruct-write), whichever reads less. Anything unreadable falls
 * back to loading the whole segment, rebuilding what is missing from parity.
 */
export class ParityEngine implements Engine {
  readonly capacity: number;
  private readonly d: number;
  private readonly m: 1 | 2;
  private readonly C: number;
  private readonly stripeData: number;
  /** Per chunk (mirrors) or stripe (parity), exclusive: a row's read-modify-write or rebuild never interleaves with another writer of it. */
  private readonly locks = new RangeLock();

  constructor(
    private readonly layout: ParityLayout,
    private readonly io: MemberIO,
    private readonly name: string,
  ) {
    this.d = layout.dataPerStripe;
    this.m = layout.parity;
    this.C = layout.chunk;
    this.stripeData = this.d * this.C;
    this.capacity = layout.rows * this.stripeData;
  }

  rowsOf(offset: number, length: number): [number, number] {
    return [Math.floor(offset / this.stripeData), Math.floor((offset + Math.max(length, 1) - 1) / this.stripeData) + 1];
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    const ps = this.pieces(offset, buf.length);
    if (ps.length === 1) return this.readPiece(buf, ps[0]!);
    return settleAll(ps.map((p) => this.readPiece(buf, p)));
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    const byStripe = new Map<number, Piece[]>();
    for (const p of this.pieces(offset, buf.length)) {
      const list = byStripe.get(p.stripe);
      if (list) list.push(p);
      else byStripe.set(p.stripe, [p]);
    }
    await settleAll([...byStripe].map(([s, ps]) => this.locks.with(s, s, true, () => this.writeStripe(s, buf, ps))));
  }

  async zero(offset: number, length: number): Promise<void> {
    const SD = this.stripeData;
    const end = offset + length;
    const firstFull = Math.ceil(offset / SD);
    const lastFull = Math.floor(end / SD);
    if (firstFull >= lastFull) return this.writeZeroBytes(offset, length);
    await this.writeZeroBytes(offset, firstFull * SD - offset);
    // Whole stripes of zeroes have zero parity: zero every member, no reads.
    for (let s = firstFull; s < lastFull; s++) {
      await this.locks.with(s, s, true, async () => {
        const jobs: Promise<void>[] = [];
        for (let mm = 0; mm < this.layout.members; mm++) if (this.io.writable(mm)) jobs.push(this.io.zero(mm, s * this.C, this.C));
        await settleAll(jobs);
      });
    }
    await this.writeZeroBytes(lastFull * SD, end - lastFull * SD);
  }

  async scrub(r0: number, r1: number, repair: boolean): Promise<ScrubPart> {
    const part: ScrubPart = { mismatches: [], unchecked: 0 };
    for (let s = r0; s < r1; s++) {
      const m = await this.locks.with(s, s, true, () => this.scrubStripe(s, repair));
      if (m === 'unchecked') part.unchecked += this.stripeData;
      else if (m) part.mismatches.push(m);
    }
    return part;
  }

  /** Stripes of one step are rebuilt in parallel: member reads of different stripes overlap. */
  async rebuild(member: number, r0: number, r1: number): Promise<void> {
    const jobs: Promise<void>[] = [];
    for (let s = r0; s < r1; s++) {
      jobs.push(this.locks.with(s, s, true, async () => {
        const role = this.layout.roleIn(s, member);
        const idx = role >= 0 ? role : role === -1 ? this.d : this.d + 1;
        // Rows past the checkpoint are unreadable and rebuilt from parity, unless the
        // role is being hot-replaced: then they are read from the old device.
        const l = await this.load(s, 0, this.C, () => false);
        try {
          await this.io.write(member, l.blocks[idx]!, s * this.C);
        } finally {
          this.release(l);
        }
      }));
    }
    await settleAll(jobs);
  }

  /** Copy 0 is the normal read; copy 1+j rebuilds member j mod n from P (RAID 6: j ≥ n from Q). */
  copies(): number {
    return 1 + this.layout.members * this.m;
  }

  async readCopy(buf: Uint8Array, offset: number, copy: number): Promise<void> {
    if (!Number.isInteger(copy) || copy < 0 || copy >= this.copies()) {
      throw new BlockDeviceError('EINVAL', this.name, 'read', `no copy ${copy} (the array offers ${this.copies()})`, offset, buf.length);
    }
    if (copy === 0) return this.read(buf, offset);
    const j = copy - 1;
    const skip = j % this.layout.members;
    const viaQ = j >= this.layout.members;
    await settleAll(
      this.pieces(offset, buf.length).map((p) =>
        this.locks.with(p.stripe, p.stripe, true, async () => {
          const other = this.m === 2 ? (viaQ ? this.layout.pMember(p.stripe) : this.layout.qMember(p.stripe)) : -1;
          const l = await this.load(p.stripe, p.within, p.length, (mm) => mm === skip || mm === other);
          buf.set(l.blocks[p.index]!, p.at);
          this.release(l);
        }),
      ),
    );
  }

  async repair(good: Uint8Array, offset: number, dryRun = false): Promise<Set<number>> {
    const fixed = new Set<number>();
    for (const p of this.pieces(offset, good.length)) {
      await this.locks.with(p.stripe, p.stripe, true, async () => {
        const want = good.subarray(p.at, p.at + p.length);
        const l = await this.load(p.stripe, p.within, p.length, () => false);
        const s1 = this.io.take();
        const s2 = this.io.take();
        try {
          const s = p.stripe;
          const L = p.length;
          const at = s * this.C + p.within;
          const dm = this.layout.dataMember(s, p.index);
          if (Buffer.compare(l.blocks[p.index]!, want) !== 0) {
            if (this.io.readable(dm, s) && this.io.writable(dm)) {
              if (!dryRun) await this.io.write(dm, want, at);
              fixed.add(dm);
            }
            l.blocks[p.index]!.set(want);
          }
          const data = l.blocks.slice(0, this.d);
          const P = s1.subarray(0, L);
          const Q = s2.subarray(0, L);
          if (this.m === 1) computeP(data, P, L);
          else computePQ(data, P, Q, L);
          const pm = this.layout.pMember(s);
          if (this.io.readable(pm, s) && Buffer.compare(P, l.blocks[this.d]!) !== 0) {
            if (!dryRun) await this.io.write(pm, P, at);
            fixed.add(pm);
          }
          const qm = this.layout.qMember(s);
          if (this.m === 2 && this.io.readable(qm, s) && Buffer.compare(Q, l.blocks[this.d + 1]!) !== 0) {
            if (!dryRun) await this.io.write(qm, Q, at);
            fixed.add(qm);
          }
        } finally {
          this.io.give(s1);
          this.io.give(s2);
          this.release(l);
        }
      });
    }
    return fixed;
  }

  private pieces(offset: number, length: number): Piece[] {
    const out: Piece[] = [];
    let at = 0;
    while (at < length) {
      const pos = offset + at;
      const stripe = Math.floor(pos / this.stripeData);
      const inStripe = pos - stripe * this.stripeData;
      const index = Math.floor(inStripe / this.C);
      const within = inStripe - index * this.C;
      const n = Math.min(this.C - within, length - at);
      out.push({ stripe, index, within, length: n, at });
      at += n;
    }
    return out;
  }

  private readPiece(buf: Uint8Array, p: Piece): Promise<void> {
    const dst = p.at === 0 && p.length === buf.length ? buf : buf.subarray(p.at, p.at + p.length);
    const m = this.layout.dataMember(p.stripe, p.index);
    if (this.io.readable(m, p.stripe)) return this.io.read(m, dst, p.stripe * this.C + p.within);
    return this.locks.with(p.stripe, p.stripe, true, async () => {
      const l = await this.load(p.stripe, p.within, p.length, () => false);
      dst.set(l.blocks[p.index]!);
      this.release(l);
    });
  }

  private async writeStripe(s: number, buf: Uint8Array, ps: Piece[]): Promise<void> {
    // Split at every piece boundary so each segment of rows has one set of touched blocks.
    const cuts = new Set<number>([0, this.C]);
    for (const p of ps) {
      cuts.add(p.within);
      cuts.add(p.within + p.length);
    }
    const points = [...cuts].sort((a, b) => a - b);
    for (let k = 0; k + 1 < points.length; k++) {
      const x = points[k]!;
      const y = points[k + 1]!;
      const touched: Touch[] = [];
      for (const p of ps) {
        if (p.within <= x && p.within + p.length >= y) {
          const from = p.at + (x - p.within);
          touched.push({ index: p.index, src: buf.subarray(from, from + (y - x)) });
        }
      }
      if (touched.length) await this.writeSegment(s, x, y - x, touched);
    }
  }

  private async writeSegment(s: number, x: number, L: number, touched: Touch[]): Promise<void> {
    const { d, m, layout, io } = this;
    const at = s * this.C + x;
    const pm = layout.pMember(s);
    const qm = m === 2 ? layout.qMember(s) : -1;
    const owned: Buffer[] = [];
    const take = (): Buffer => {
      const b = io.take();
      owned.push(b);
      return b.subarray(0, L);
    };
    try {
      const isTouched = new Array<boolean>(d).fill(false);
      for (const t of touched) isTouched[t.index] = true;
      const readable = (mm: number): boolean => io.readable(mm, s);
      const parityReadable = readable(pm) && (m === 1 || readable(qm));
      let canRmw = parityReadable;
      let canRcw = true;
      for (let i = 0; i < d; i++) {
        const ok = readable(layout.dataMember(s, i));
        if (isTouched[i]) canRmw &&= ok;
        else canRcw &&= ok;
      }
      const T = touched.length;
      let P: Uint8Array;
      let Q: Uint8Array | undefined;
      if (T === d || (canRcw && (!canRmw || d - T <= T + m))) {
        // Reconstruct-write (with nothing to read when every block is touched).
        const data = new Array<Uint8Array>(d);
        for (const t of touched) data[t.index] = (t.src.byteOffset & 3) === 0 ? t.src : copyInto(take(), t.src);
        const reads: Promise<void>[] = [];
        for (let i = 0; i < d; i++) {
          if (isTouched[i]) continue;
          const b = take();
          data[i] = b;
          reads.push(io.read(layout.dataMember(s, i), b, at));
        }
        await settleAll(reads);
        P = take();
        if (m === 1) computeP(data, P, L);
        else computePQ(data, P, (Q = take()), L);
      } else if (canRmw) {
        // Read-modify-write: P ^= old ^ new; Q ^= 2^i·(old ^ new).
        const olds = touched.map(() => take());
        P = take();
        if (m === 2) Q = take();
        const reads = touched.map((t, k) => io.read(layout.dataMember(s, t.index), olds[k]!, at));
        reads.push(io.read(pm, P, at));
        if (Q) reads.push(io.read(qm, Q, at));
        await settleAll(reads);
        const scratch = Q ? take() : undefined;
        touched.forEach((t, k) => {
          const delta = olds[k]!;
          xorInto(delta, t.src, L);
          xorInto(P, delta, L);
          if (Q) xorQTerm(Q, delta, t.index, L, scratch!);
        });
      } else {
        const l = await this.load(s, x, L, () => false);
        owned.push(...l.owned);
        for (const t of touched) l.blocks[t.index]!.set(t.src);
        const data = l.blocks.slice(0, d);
        P = l.blocks[d]!;
        if (m === 1) computeP(data, P, L);
        else computePQ(data, P, (Q = l.blocks[d + 1]!), L);
      }
      const writes: Promise<void>[] = [];
      for (const t of touched) {
        const dm = layout.dataMember(s, t.index);
        if (io.writable(dm)) writes.push(io.write(dm, t.src, at));
      }
      if (io.writable(pm)) writes.push(io.write(pm, P, at));
      if (Q && io.writable(qm)) writes.push(io.write(qm, Q, at));
      await settleAll(writes);
    } finally {
      for (const b of owned) io.give(b);
    }
  }

  /** Reads one segment of every block of stripe `s`, rebuilding those unreadable or excluded. */
  private async load(s: number, x: number, L: number, exclude: (member: number) => boolean): Promise<Loaded> {
    const { d, m, layout, io } = this;
    const n = d + m;
    const owned: Buffer[] = [];
    const blocks: Buffer[] = [];
    const missing: number[] = [];
    const where: number[] = [];
    for (let j = 0; j < n; j++) {
      const mm = j < d ? layout.dataMember(s, j) : j === d ? layout.pMember(s) : layout.qMember(s);
      where.push(mm);
      if (!io.readable(mm, s) || exclude(mm)) missing.push(j);
    }
    if (missing.length > m) {
      throw new BlockDeviceError('EIO', this.name, 'read', `stripe ${s}: ${missing.length} of its blocks are unavailable and parity rebuilds at most ${m}`, s * this.stripeData, this.stripeData);
    }
    const reads: Promise<void>[] = [];
    for (let j = 0; j < n; j++) {
      const b = io.take();
      owned.push(b);
      blocks.push(b.subarray(0, L));
      if (!missing.includes(j)) reads.push(io.read(where[j]!, blocks[j]!, s * this.C + x));
    }
    const l = { blocks, owned };
    try {
      await settleAll(reads);
      if (missing.length) {
        const s1 = io.take();
        const s2 = io.take();
        try {
          reconstruct(blocks, d, m, missing, L, s1, s2);
        } finally {
          io.give(s1);
          io.give(s2);
        }
      }
      return l;
    } catch (err) {
      this.release(l);
      throw err;
    }
  }

  private release(l: Loaded): void {
    for (const b of l.owned) this.io.give(b);
  }

  private async scrubStripe(s: number, repair: boolean): Promise<Mismatch | 'unchecked' | undefined> {
    const { d, m, layout, io, C } = this;
    let out = 0;
    for (let mm = 0; mm < layout.members; mm++) if (!io.readable(mm, s)) out++;
    if (out > 0) return repair || out >= m ? 'unchecked' : this.checkDegraded(s);
    const l = await this.load(s, 0, C, () => false);
    const s1 = io.take();
    const s2 = io.take();
    try {
      const data = l.blocks.slice(0, d);
      if (m === 1) computeP(data, s1, C);
      else computePQ(data, s1, s2, C);
      const pBad = Buffer.compare(s1, l.blocks[d]!) !== 0;
      const qBad = m === 2 && Buffer.compare(s2, l.blocks[d + 1]!) !== 0;
      if (!pBad && !qBad) return undefined;
      const pm = layout.pMember(s);
      const qm = layout.qMember(s);
      const found: Mismatch = { offset: s * this.stripeData, length: this.stripeData, members: [], repaired: repair };
      if (pBad && qBad) {
        // One bad data block z leaves P-syndrome e and Q-syndrome 2^z·e: find z.
        xorInto(s1, l.blocks[d]!, C);
        xorInto(s2, l.blocks[d + 1]!, C);
        const z = locateSingleError(s1, s2, C);
        if (z >= 0 && z < d) {
          const dm = layout.dataMember(s, z);
          found.members.push(dm);
          if (repair) {
            xorInto(l.blocks[z]!, s1, C);
            await io.write(dm, l.blocks[z]!, s * C);
          }
          return found;
        }
        found.members.push(pm, qm);
        if (repair) {
          computePQ(data, s1, s2, C);
          await settleAll([io.write(pm, s1, s * C), io.write(qm, s2, s * C)]);
        }
        return found;
      }
      if (pBad) {
        found.members.push(pm);
        if (repair) await io.write(pm, s1, s * C);
      } else {
        found.members.push(qm);
        if (repair) await io.write(qm, s2, s * C);
      }
      return found;
    } finally {
      io.give(s1);
      io.give(s2);
      this.release(l);
    }
  }

  /**
   * RAID 6 with one block of the stripe out: rebuilding it spends one of the
   * two syndromes, and the other still checks the rest. A mismatch cannot be
   * pinned to a block with one syndrome, so it is reported against the parity
   * read, and never repaired here: rewriting parity from data that may be the
   * bad block would throw away the copy the pool's checksums can still rebuild.
   */
  private async checkDegraded(s: number): Promise<Mismatch | undefined> {
    const { d, layout, io, C } = this;
    const l = await this.load(s, 0, C, () => false);
    const p = io.take();
    const q = io.take();
    try {
      computePQ(l.blocks.slice(0, d), p, q, C);
      if (Buffer.compare(p, l.blocks[d]!) === 0 && Buffer.compare(q, l.blocks[d + 1]!) === 0) return undefined;
      const members = [layout.pMember(s), layout.qMember(s)].filter((mm) => io.readable(mm, s));
      return { offset: s * this.stripeData, length: this.stripeData, members, repaired: false };
    } finally {
      io.give(p);
      io.give(q);
      this.release(l);
    }
  }

  private async writeZeroBytes(offset: number, length: number): Promise<void> {
    zeroes ??= Buffer.alloc(1024 * 1024);
    for (let done = 0; done < length; done += zeroes.length) {
      await this.write(zeroes.subarray(0, Math.min(zeroes.length, length - done)), offset + done);
    }
  }
}

function copyInto(dst: Buffer, src: Uint8Array): Buffer {
  dst.set(src);
  return dst;
}

/** The data index z with Q-syndrome = 2^z · P-syndrome on every byte, or -1 if no single z explains both. */
function locateSingleError(pd: Uint8Array, qd: Uint8Array, len: number): number {
  let z = -1;
  for (let i = 0; i < len; i++) {
    const p = pd[i]!;
    const q = qd[i]!;
    if (p === 0 && q === 0) continue;
    if (p === 0 || q === 0) return -1;
    const k = (GF_LOG[q]! - GF_LOG[p]! + 255) % 255;
    if (z < 0) z = k;
    else if (z !== k) return -1;
  }
  return z;
}
