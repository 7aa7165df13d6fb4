import { BlockDeviceError, checkRange, type Extent, type WriteOptions, type WriteZeroesOptions } from '../blockdev/index.js';
import { dataChecksum, dataChecksums } from './checksum.js';
import type { PoolCore } from './core.js';
import { ChecksumError } from './errors.js';
import { ENTRY_ALLOC, ENTRY_SUMS, ENTRY_ZERO, isInherited, readHost, writeHost } from './geometry.js';
import type { EntryRef, Layer } from './layer.js';
import { popcount } from './shared-space.js';
import type { Volume } from './types.js';

/** An L2 entry as it was before a write changed it, to put back if the data write fails. */
interface EntryUndo {
  l2Cluster: number;
  l2: Buffer;
  at: number;
  entry: Buffer;
  /** The host cluster this write allocated for the entry, or -1. */
  allocated: number;
  /** The sub-clusters of the entry the write covered. */
  first: number;
  count: number;
}

interface DataPiece {
  /** Host byte offset of the sub-cluster. */
  host: number;
  /** Where in the caller's buffer the piece goes. */
  bufAt: number;
  /** Offset within the sub-cluster and length of the piece. */
  scOff: number;
  n: number;
  sum: number;
  /** Virtual offset of the sub-cluster (for error messages). */
  vsc: number;
}

/** Checksums of the sub-clusters of the write being applied (grown as needed, never shrunk: 8192 entries cover 32 MiB). */
let sumScratch = new Uint32Array(256);

/** Block-status answers stop after this many runs; NBD lets a server answer less than was asked. */
const MAX_EXTENTS = 65536;

/**
 * A thin volume: the top layer of its chain, as a BlockDevice.
 *
 * Writes go in place. Into a cluster nothing durable points at yet (fresh
 * since the last commit) they go freely; over data referenced durably, only
 * under a durable intent for the L2 table (see MetaStore), so that after a
 * crash every sub-cluster's checksum again matches what a reader finds and
 * every byte reads old or new.
 */
export class VolumeHandle implements Volume {
  readonly blockSize = 512;
  readonly preferredBlockSize: number;
  readonly discardZeroes = true;
  private closed = false;

  constructor(
    private readonly core: PoolCore,
    /** The top of the volume's chain; a snapshot or a revert puts another layer here (see switchTo). */
    public layer: Layer,
    readonly volumeName: string,
    readonly readOnly: boolean,
    private readonly onClose: () => void,
  ) {
    this.preferredBlockSize = core.geo.subclusterSize;
  }

  get name(): string {
    return `volume '${this.volumeName}'`;
  }

  get size(): number {
    return this.layer.size;
  }

  // ---- read ------------------------------------------------------------------

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.checkOpen('read');
    checkRange(this, 'read', offset, buf.length);
    if (buf.length === 0) return;
    const C = this.core.geo.clusterSize;
    const first = Math.floor(offset / C);
    const last = Math.floor((offset + buf.length - 1) / C);
    const lock = this.lockRange(first, last, false);
    const release = typeof lock === 'function' ? lock : await lock;
    try {
      const b = asBuffer(buf);
      const direct = first === last ? this.readWholeSubclusters(b, offset) : undefined;
      await (direct ?? this.readLayer(this.layer, b, 0, offset, buf.length));
    } finally {
      release();
    }
  }

  /**
   * Locks clusters first..last of the volume's top layer. A snapshot takes
   * the whole of the old top exclusively while it puts the new one in place:
   * a request that waited for it finds another layer on top, lets go and
   * locks that one, so it lands wholly after the snapshot point.
   */
  private lockRange(first: number, last: number, exclusive: boolean): (() => void) | Promise<() => void> {
    const layer = this.layer;
    const lock = layer.lock.acquire(first, last, exclusive);
    if (typeof lock === 'function') return lock;
    return lock.then((release) => {
      if (layer === this.layer) return release;
      release();
      return this.lockRange(first, last, exclusive);
    });
  }

  /** Puts another layer on top (a snapshot, a revert); the caller holds the old top's whole range. */
  switchTo(layer: Layer): void {
    this.layer = layer;
  }

  /**
   * The request most guests send — whole sub-clusters of one cluster, all
   * allocated in this layer — as one device read and one verification, without
   * the bookkeeping of the general path. Undefined when the request needs that
   * path.
   */
  private readWholeSubclusters(buf: Buffer, offset: number): Promise<void> | undefined {
    const { clusterSize: C, subclusterSize: S } = this.core.geo;
    if (offset % S !== 0 || buf.length % S !== 0) return undefined;
    const vc = Math.floor(offset / C);
    const ref = this.layer.peek(vc);
    if (!ref) return undefined;
    const { l2, at } = ref;
    const i0 = (offset - vc * C) / S;
    const n = buf.length / S;
    const mask = n === 32 ? -1 : (((1 << n) - 1) << i0) | 0;
    if ((l2.readInt32LE(at + ENTRY_ALLOC) & mask) !== mask) return undefined;
    const host = readHost(l2, at) * C + i0 * S;
    // Expected sums are taken now: the entry may change once the lock is released, never while the read is under way.
    const want = n === 1 ? l2.readUInt32LE(at + ENTRY_SUMS + 4 * i0) : new Uint32Array(l2.buffer.slice(l2.byteOffset + at + ENTRY_SUMS + 4 * i0, l2.byteOffset + at + ENTRY_SUMS + 4 * (i0 + n)));
    return this.core.dev.read(buf, host).then(() => this.verifyWhole(buf, offset, host, want));
  }

  private async verifyWhole(buf: Buffer, offset: number, host: number, want: number | Uint32Array): Promise<void> {
    const S = this.core.geo.subclusterSize;
    if (typeof want === 'number') {
      if (dataChecksum(buf) !== want) await this.recover(buf, { host, bufAt: 0, scOff: 0, n: S, sum: want, vsc: offset });
      return;
    }
    const sums = new Uint32Array(want.length);
    dataChecksums(buf, S, want.length, sums);
    for (let k = 0; k < want.length; k++) {
      if (sums[k] !== want[k]) await this.recover(buf.subarray(k * S, (k + 1) * S), { host: host + k * S, bufAt: k * S, scOff: 0, n: S, sum: want[k]!, vsc: offset + k * S });
    }
  }

  /**
   * Reads [voff, voff+len) as `layer` sees it into buf at bufOff. A layer's
   * map is whole: entries it inherited point straight at an ancestor's
   * clusters, so a read never walks the chain, however deep.
   */
  private async readLayer(layer: Layer, buf: Buffer, bufOff: number, voff: number, len: number): Promise<void> {
    const { clusterSize: C, subclusterSize: S, entriesPerL2: P } = this.core.geo;
    let end = voff + len;
    if (voff >= layer.size) return void buf.fill(0, bufOff, bufOff + len);
    if (end > layer.size) {
      buf.fill(0, bufOff + (layer.size - voff), bufOff + len);
      end = layer.size;
    }
    const pieces: DataPiece[] = [];
    let pos = voff;
    while (pos < end) {
      const vc = Math.floor(pos / C);
      let ref = layer.peek(vc);
      if (ref === undefined) ref = await layer.lookup(vc);
      if (ref === null) {
        // No L2 table: the whole span it would map reads as zeroes.
        const spanEnd = Math.min(end, (Math.floor(vc / P) + 1) * P * C);
        buf.fill(0, bufOff + pos - voff, bufOff + spanEnd - voff);
        pos = spanEnd;
        continue;
      }
      const { l2, at } = ref;
      const host = readHost(l2, at) * C;
      const alloc = l2.readUInt32LE(at + ENTRY_ALLOC);
      const cend = Math.min(end, (vc + 1) * C);
      while (pos < cend) {
        const i = Math.floor((pos - vc * C) / S);
        const scBase = vc * C + i * S;
        const b = Math.min(cend, scBase + S);
        const bit = 1 << i;
        if (alloc & bit) {
          pieces.push({ host: host + i * S, bufAt: bufOff + pos - voff, scOff: pos - scBase, n: b - pos, sum: l2.readUInt32LE(at + ENTRY_SUMS + 4 * i), vsc: scBase });
        } else {
          buf.fill(0, bufOff + pos - voff, bufOff + b - voff);
        }
        pos = b;
      }
    }
    if (pieces.length > 0) await this.fetch(pieces, buf);
  }

  /** Reads data sub-clusters, coalescing runs that are contiguous on the host and in the buffer, and verifies each. */
  private async fetch(pieces: DataPiece[], buf: Buffer): Promise<void> {
    const S = this.core.geo.subclusterSize;
    let reads: Array<Promise<void>> | undefined;
    let i = 0;
    while (i < pieces.length) {
      const p = pieces[i]!;
      let job: Promise<void>;
      if (p.scOff !== 0 || p.n !== S) {
        job = this.fetchPartial(p, buf);
        i++;
      } else {
        let j = i + 1;
        while (j < pieces.length) {
          const q = pieces[j]!;
          const prev = pieces[j - 1]!;
          if (q.scOff !== 0 || q.n !== S || q.host !== prev.host + S || q.bufAt !== prev.bufAt + S) break;
          j++;
        }
        job = this.fetchRun(pieces, i, j, buf);
        i = j;
      }
      // The common case, one run, needs no array of promises.
      if (i >= pieces.length && !reads) return job;
      (reads ??= []).push(job);
    }
    if (reads) await Promise.all(reads);
  }

  private async fetchRun(pieces: DataPiece[], from: number, to: number, buf: Buffer): Promise<void> {
    const S = this.core.geo.subclusterSize;
    const first = pieces[from]!;
    const run = buf.subarray(first.bufAt, first.bufAt + (to - from) * S);
    await this.core.dev.read(run, first.host);
    const sums = to - from === 1 ? [dataChecksum(run)] : new Uint32Array(to - from);
    if (to - from > 1) dataChecksums(run, S, to - from, sums);
    for (let k = from; k < to; k++) {
      const q = pieces[k]!;
      if (sums[k - from] !== q.sum) await this.recover(buf.subarray(q.bufAt, q.bufAt + S), q);
    }
  }

  private async fetchPartial(p: DataPiece, buf: Buffer): Promise<void> {
    const tmp = Buffer.allocUnsafe(this.core.geo.subclusterSize);
    await this.core.dev.read(tmp, p.host);
    if (dataChecksum(tmp) !== p.sum) await this.recover(tmp, p);
    tmp.copy(buf, p.bufAt, p.scOff, p.scOff + p.n);
  }

  /** A sub-cluster failed its checksum: get a good copy from the redundancy below, or fail naming the place. */
  private async recover(sc: Buffer, p: DataPiece): Promise<void> {
    const ok = await this.core.store.fromRedundancy(sc, p.host, (b) => dataChecksum(b) === p.sum);
    if (ok) {
      // Read-only: served from the good copy, the rewrite left pending with the device below.
      if (!this.core.readOnly) this.core.counters.repairedData++;
      return;
    }
    this.core.counters.corruptData++;
    throw new ChecksumError(this.core.dev.name, 'data', p.host, this.volumeName, p.vsc);
  }

  // ---- write -----------------------------------------------------------------

  async write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    this.checkWritable('write', offset, buf.length);
    if (buf.length > 0) await this.writeRange(asBuffer(buf), offset);
    await this.afterWrite(opts?.fua);
  }

  private async afterWrite(fua: boolean | undefined): Promise<void> {
    const { store } = this.core;
    if (fua) await store.commit();
    else await store.relieve();
  }

  private async writeRange(data: Buffer, voff: number): Promise<void> {
    const { clusterSize: C, subclusterSize: S } = this.core.geo;
    const end = voff + data.length;
    const aStart = Math.floor(voff / S) * S;
    const aEnd = Math.ceil(end / S) * S;
    const lock = this.lockRange(Math.floor(aStart / C), Math.floor((aEnd - 1) / C), true);
    const release = typeof lock === 'function' ? lock : await lock;
    try {
      const direct = voff === aStart && end === aEnd ? this.writeWholeSubclusters(data, voff) : undefined;
      await (direct ?? this.writeLocked(data, voff));
    } finally {
      release();
    }
  }

  /** writeRange's general path; the caller holds the clusters' lock. */
  private async writeLocked(data: Buffer, voff: number): Promise<void> {
    const S = this.core.geo.subclusterSize;
    const end = voff + data.length;
    const aStart = Math.floor(voff / S) * S;
    const aEnd = Math.ceil(end / S) * S;
    // Partial sub-clusters at the edges become whole ones: read what is there and lay the data over it.
    const segments: Array<{ at: number; data: Buffer }> = [];
    if (aEnd - aStart === S && (voff !== aStart || end !== aEnd)) {
      const sc = Buffer.alloc(S);
      await this.readLayer(this.layer, sc, 0, aStart, S);
      data.copy(sc, voff - aStart);
      segments.push({ at: aStart, data: sc });
    } else {
      let mid = voff;
      let midEnd = end;
      if (voff !== aStart) {
        const head = Buffer.alloc(S);
        await this.readLayer(this.layer, head, 0, aStart, S);
        data.copy(head, voff - aStart, 0, aStart + S - voff);
        segments.push({ at: aStart, data: head });
        mid = aStart + S;
      }
      if (end !== aEnd) midEnd = aEnd - S;
      if (midEnd > mid) segments.push({ at: mid, data: data.subarray(mid - voff, midEnd - voff) });
      if (end !== aEnd) {
        const tail = Buffer.alloc(S);
        await this.readLayer(this.layer, tail, 0, aEnd - S, S);
        data.copy(tail, 0, aEnd - S - voff);
        segments.push({ at: aEnd - S, data: tail });
      }
    }
    try {
      await this.applyWrite(segments, aStart, aEnd);
    } catch (err) {
      // Space may be waiting in quarantine for a checkpoint: release it and try once more.
      if (!(err instanceof BlockDeviceError && err.code === 'ENOSPC' && this.core.alloc.waiting > 0)) throw err;
      await this.core.store.checkpoint();
      await this.applyWrite(segments, aStart, aEnd);
    }
  }

  /**
   * The write most guests send — whole sub-clusters of one cluster that the
   * layer owns, already in place and writable now (fresh since the last
   * commit or under an intent), or not yet allocated in a table of the
   * layer's own — decided without yielding and with one device write, the
   * way applyWrite would decide it. Undefined when the request needs that
   * path (the caller holds the cluster's lock either way).
   */
  private writeWholeSubclusters(data: Buffer, voff: number): Promise<void> | undefined {
    const { geo, store, alloc } = this.core;
    const { clusterSize: C, subclusterSize: S, entrySize: E } = geo;
    const vc = Math.floor(voff / C);
    if (Math.floor((voff + data.length - 1) / C) !== vc) return undefined;
    const ref = this.layer.peek(vc);
    if (!ref || !this.layer.ownsTable(ref) || isInherited(ref.l2, ref.at)) return undefined;
    const { l2, at } = ref;
    let host = readHost(l2, at);
    if (host !== 0 && !alloc.isFresh(host) && !store.hasIntent(ref.l2Cluster)) return undefined;
    const gate = store.enter();
    if (gate) {
      // A commit is capturing: what was checked may change under it (tables leave memory, intents end).
      return gate.then(() => {
        store.exit();
        return this.writeLocked(data, voff);
      });
    }
    const i0 = (voff - vc * C) / S;
    const n = data.length / S;
    const u: EntryUndo = { l2Cluster: ref.l2Cluster, l2, at, entry: Buffer.from(l2.subarray(at, at + E)), allocated: -1, first: i0, count: n };
    if (host === 0) {
      try {
        host = alloc.allocate();
      } catch {
        // A full pool: the general path reports it, or first releases space waiting for a checkpoint.
        store.exit();
        return this.writeLocked(data, voff);
      }
      u.allocated = host;
      this.layer.setHost(ref, host);
    }
    const mask = n === 32 ? -1 : ((1 << n) - 1) << i0;
    l2.writeUInt32LE((l2.readUInt32LE(at + ENTRY_ALLOC) | mask) >>> 0, at + ENTRY_ALLOC);
    l2.writeUInt32LE(0, at + ENTRY_ZERO);
    // Only the words that change go into the journal (the host word, if it did, setHost marked):
    // a random 4K write then adds 48 bytes to the next transaction instead of 160, and commits
    // for journal pressure, whose flush cleans every page the next writes must dirty again, come
    // a third as often.
    store.markDirty(ref.l2Cluster, at + ENTRY_ALLOC, ENTRY_SUMS - ENTRY_ALLOC);
    store.markDirty(ref.l2Cluster, at + ENTRY_SUMS + 4 * i0, 4 * n);
    const issued = this.core.dev.write(data, host * C + i0 * S);
    // Hashed while the device writes; the entry has its checksums before anything else runs.
    if (n === 1) l2.writeUInt32LE(dataChecksum(data), at + ENTRY_SUMS + 4 * i0);
    else this.stampSums([{ at: voff, data }], voff, voff + data.length, [[u, 0]]);
    return issued.then(
      () => store.exit(),
      async (err: unknown) => {
        try {
          await this.undoWrite([u]);
        } finally {
          store.exit();
        }
        throw err;
      },
    );
  }

  /**
   * Writes whole sub-clusters [aStart, aEnd) from `segments` (contiguous, in
   * order). Clusters that nothing durable points at are written in place
   * freely; clusters that are referenced durably only under an intent for
   * their L2 table, acquired (a commit) before the write starts.
   */
  private async applyWrite(segments: Array<{ at: number; data: Buffer }>, aStart: number, aEnd: number, lastCluster?: number): Promise<void> {
    const { geo, store } = this.core;
    const C = geo.clusterSize;
    const first = Math.floor(aStart / C);
    const last = lastCluster ?? Math.floor((aEnd - 1) / C);
    const kept = new Map<number, Buffer>();
    for (;;) {
      await this.ensureAll(first, last);
      if (!(await this.keepInherited(first, last, aStart, aEnd, kept))) continue;
      const need = aEnd > aStart ? this.intentsNeeded(first, last) : [];
      if (need === undefined) continue;
      if (need.length > 0) {
        await store.acquireIntents(need);
        continue;
      }
      const gate = store.enter();
      if (gate) await gate;
      // The gate may have waited for a commit or checkpoint: tables may be gone from memory, intents ended.
      const again = aEnd > aStart ? this.intentsNeeded(first, last) : [];
      if (again === undefined || again.length > 0 || !this.hasKept(first, last, aStart, aEnd, kept)) {
        store.exit();
        continue;
      }
      try {
        await this.applyUnderGate(segments, aStart, aEnd, first, last, kept);
      } finally {
        store.exit();
        // Every write of the kept data has settled (applyUnderGate waits for all of them).
        for (const data of kept.values()) this.core.clusterBuffers.give(data);
      }
      return;
    }
  }

  /**
   * Sub-clusters of an inherited cluster that the write leaves as they are,
   * which the layer's own copy of the cluster must hold too: the part of the
   * cluster outside [aStart, aEnd) that holds data.
   */
  private keptBits(ref: EntryRef, vc: number, aStart: number, aEnd: number): number {
    if (this.layer.owns(ref) || readHost(ref.l2, ref.at) === 0) return 0;
    const { clusterSize: C, subclusterSize: S, subclusters: n } = this.core.geo;
    const s = (Math.max(aStart, vc * C) - vc * C) / S;
    const e = (Math.min(aEnd, (vc + 1) * C) - vc * C) / S;
    const written = e <= s ? 0 : e - s === 32 ? -1 : ((1 << (e - s)) - 1) << s;
    const all = n === 32 ? -1 : (1 << n) - 1;
    return (ref.l2.readUInt32LE(ref.at + ENTRY_ALLOC) & ~written & all) >>> 0;
  }

  /**
   * Reads (verified) what a write over inherited clusters must carry into the
   * layer's own copies: redirect-on-write never changes a shared cluster.
   * False when tables left memory meanwhile (the caller ensures them again).
   */
  private async keepInherited(first: number, last: number, aStart: number, aEnd: number, kept: Map<number, Buffer>): Promise<boolean> {
    const C = this.core.geo.clusterSize;
    for (let vc = first; vc <= last; vc++) {
      const ref = this.layer.peek(vc);
      if (ref === undefined) return false;
      if (ref === null || kept.has(vc) || this.keptBits(ref, vc, aStart, aEnd) === 0) continue;
      const data = this.core.clusterBuffers.take();
      const n = Math.min(C, this.layer.size - vc * C);
      data.fill(0, n);
      kept.set(vc, data);
      await this.readLayer(this.layer, data, 0, vc * C, n);
    }
    return true;
  }

  /** Every inherited cluster the write covers in part has its kept data read (synchronous; under the gate). */
  private hasKept(first: number, last: number, aStart: number, aEnd: number, kept: Map<number, Buffer>): boolean {
    for (let vc = first; vc <= last; vc++) {
      const ref = this.layer.peek(vc);
      if (ref === undefined) return false;
      if (ref !== null && !kept.has(vc) && this.keptBits(ref, vc, aStart, aEnd) !== 0) return false;
    }
    return true;
  }

  /** L2 tables that an in-place write to clusters first..last needs an intent for; undefined when a table is not in memory. */
  private intentsNeeded(first: number, last: number): number[] | undefined {
    const { store, alloc } = this.core;
    const need: number[] = [];
    for (let vc = first; vc <= last; vc++) {
      const ref = this.layer.peek(vc);
      if (ref === undefined) return undefined;
      // Inherited clusters are not written in place: the write gets a fresh cluster of the layer's own.
      if (ref === null || !this.layer.owns(ref) || store.hasIntent(ref.l2Cluster) || need[need.length - 1] === ref.l2Cluster) continue;
      const host = readHost(ref.l2, ref.at);
      if (host !== 0 && !alloc.isFresh(host)) need.push(ref.l2Cluster);
    }
    return need;
  }

  private async applyUnderGate(segments: Array<{ at: number; data: Buffer }>, aStart: number, aEnd: number, first: number, last: number, kept: Map<number, Buffer>): Promise<void> {
    const { geo, store, alloc } = this.core;
    const { clusterSize: C, subclusterSize: S, entrySize: E } = geo;
    const writes: Array<[number, Buffer]> = [];
    const undo: EntryUndo[] = [];
    /** Entries whose written sub-clusters take checksums, and the index of the first in the request. */
    const stamps: Array<[EntryUndo, number]> = [];
    // The entries as they were, to put back if a data write fails: one allocation per request.
    const before = Buffer.allocUnsafe((last - first + 1) * E);
    let failure: unknown;
    let seg = 0;
    const sliceAt = (x: number): Buffer => {
      while (segments[seg]!.at + segments[seg]!.data.length <= x) seg++;
      const s = segments[seg]!;
      return s.data.subarray(x - s.at, x - s.at + S);
    };
    try {
      for (let vc = first; vc <= last; vc++) {
        const s = Math.max(aStart, vc * C);
        const e = Math.min(aEnd, (vc + 1) * C);
        const shared = this.layer.peek(vc);
        const keep = shared ? this.keptBits(shared, vc, aStart, aEnd) : 0;
        if (e <= s && !shared) continue;
        // The entry just peeked serves the common case (a table of the layer's own) without a second lookup.
        const ref = this.layer.ownEntry(vc, shared);
        const { l2, at } = ref;
        let host = readHost(l2, at);
        const entry = before.subarray((vc - first) * E, (vc - first + 1) * E);
        l2.copy(entry, 0, at, at + E);
        const u: EntryUndo = { l2Cluster: ref.l2Cluster, l2, at, entry, allocated: -1, first: (s - vc * C) / S, count: (e - s) / S };
        undo.push(u);
        if (e <= s) {
          // Nothing written here (a flatten): the layer takes its own copy of what it inherits.
          if (host === 0 || !isInherited(l2, at)) continue;
          if (keep === 0) {
            writeHost(l2, at, 0);
            store.markDirty(ref.l2Cluster, at, 8);
            continue;
          }
        }
        if (host !== 0 && isInherited(l2, at)) {
          // Redirect-on-write: a cluster of the layer's own takes the written part and what it keeps of the shared one.
          host = alloc.allocate();
          u.allocated = host;
          writeHost(l2, at, host);
          store.markDirty(ref.l2Cluster, at, 8);
          const data = kept.get(vc);
          for (let i = 0; keep !== 0 && i < geo.subclusters; i++) if (keep & (1 << i)) writes.push([host * C + i * S, data!.subarray(i * S, (i + 1) * S)]);
        } else if (host === 0) {
          host = alloc.allocate();
          u.allocated = host;
          this.layer.setHost(ref, host);
        }
        let bits = l2.readUInt32LE(at + ENTRY_ALLOC);
        for (let x = s; x < e; x += S) bits |= 1 << ((x - vc * C) / S);
        if (e > s) stamps.push([u, (s - aStart) / S]);
        // The cluster's part comes from one segment (the common case) or, at the edges, from several.
        let within: { at: number; data: Buffer } | undefined;
        for (const sg of segments) if (sg.at <= s && e <= sg.at + sg.data.length) within = sg;
        if (within) writes.push([host * C + (s - vc * C), within.data.subarray(s - within.at, e - within.at)]);
        else for (let x = s; x < e; x += S) writes.push([host * C + (x - vc * C), sliceAt(x)]);
        l2.writeUInt32LE(bits >>> 0, at + ENTRY_ALLOC);
        l2.writeUInt32LE(0, at + ENTRY_ZERO);
        store.markDirty(ref.l2Cluster, at, E);
      }
    } catch (err) {
      // Keep what was decided consistent with the device: issue the writes already mapped, then fail.
      failure = err;
    }
    const issued = coalesce(writes).map(([off, b]) => this.core.dev.write(b, off));
    // Hashed while the device writes; the entries have their checksums before anything else runs.
    this.stampSums(segments, aStart, aEnd, stamps);
    if (issued.length === 1 && failure === undefined) {
      try {
        await issued[0];
      } catch (err) {
        await this.undoWrite(undo);
        throw err;
      }
      return;
    }
    const results = await Promise.allSettled(issued);
    const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (rejected) {
      await this.undoWrite(undo);
      throw rejected.reason;
    }
    if (failure) throw failure;
  }

  /**
   * Puts the checksum of every written sub-cluster into its entry: each
   * segment hashed in one SIMD pass, into a scratch array read before this
   * returns. Synchronous.
   */
  private stampSums(segments: Array<{ at: number; data: Buffer }>, aStart: number, aEnd: number, stamps: Array<[EntryUndo, number]>): void {
    const S = this.core.geo.subclusterSize;
    const count = (aEnd - aStart) / S;
    if (sumScratch.length < count) sumScratch = new Uint32Array(count);
    for (const sg of segments) dataChecksums(sg.data, S, sg.data.length / S, sumScratch, (sg.at - aStart) / S);
    for (const [u, from] of stamps) for (let k = 0; k < u.count; k++) u.l2.writeUInt32LE(sumScratch[from + k]!, u.at + ENTRY_SUMS + 4 * (u.first + k));
  }

  /**
   * A data write failed (a full host, an I/O error): put the map back as the
   * device can back it, before the write gate lets a commit capture it.
   * Clusters this write allocated go back to the pool; sub-clusters it
   * overwrote hold old or new bytes in each sector, so their checksums are
   * taken again from what the device now holds.
   */
  private async undoWrite(undo: EntryUndo[]): Promise<void> {
    const { geo, store, alloc } = this.core;
    const { clusterSize: C, subclusterSize: S, entrySize: E } = geo;
    for (const u of undo) {
      const now = readHost(u.l2, u.at);
      u.entry.copy(u.l2, u.at);
      store.markDirty(u.l2Cluster, u.at, E);
      if (u.allocated !== -1 && now === u.allocated) alloc.free(u.allocated);
    }
    const sc = Buffer.alloc(S);
    for (const u of undo) {
      const host = readHost(u.l2, u.at);
      const bits = u.l2.readUInt32LE(u.at + ENTRY_ALLOC);
      for (let i = u.first; i < u.first + u.count; i++) {
        if (host === 0 || !(bits & (1 << i))) continue;
        try {
          await this.core.dev.read(sc, host * C + i * S);
        } catch {
          // Unreadable now: its old checksum stays, and a read reports the place.
          continue;
        }
        u.l2.writeUInt32LE(dataChecksum(sc), u.at + ENTRY_SUMS + 4 * i);
        store.markDirty(u.l2Cluster, u.at + ENTRY_SUMS + 4 * i, 4);
      }
    }
  }

  /** Brings every table of clusters first..last into memory, so that the caller can then work without yielding. */
  private async ensureAll(first: number, last: number): Promise<void> {
    for (;;) {
      let missing = false;
      for (let vc = first; vc <= last; vc++) {
        if (this.layer.peek(vc) === undefined) {
          missing = true;
          await this.layer.ensure(vc);
        }
      }
      if (!missing) return;
      // Something loaded meanwhile may have pushed an earlier block out: check all again.
      let all = true;
      for (let vc = first; vc <= last && all; vc++) all = this.layer.peek(vc) !== undefined;
      if (all) return;
    }
  }

  // ---- zeroes and discard ------------------------------------------------------

  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    this.checkWritable('writeZeroes', offset, length);
    await this.zeroRange(offset, length, opts?.mayUnmap ?? false);
    await this.afterWrite(opts?.fua);
  }

  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable('discard', offset, length);
    await this.zeroRange(offset, length, true);
    await this.afterWrite(false);
  }

  /**
   * Zeroes a range without writing data: whole sub-clusters lose their data
   * bit; clusters of the layer's own left empty are freed when unmapping is
   * allowed, and inherited ones are let go (their owner keeps them). Partial sub-clusters at
   * the edges are written as zeroes. Works one L2 table at a time, committing
   * in between when enough piles up, so a 4 GiB request needs no more memory
   * than a small one.
   */
  private async zeroRange(voff: number, len: number, unmap: boolean): Promise<void> {
    const { clusterSize: C, subclusterSize: S, entriesPerL2: P } = this.core.geo;
    const end = voff + len;
    const aStart = Math.ceil(voff / S) * S;
    const aEnd = Math.max(aStart, Math.floor(end / S) * S);
    if (aStart >= aEnd) {
      if (len > 0) await this.writeRange(Buffer.alloc(len), voff);
      return;
    }
    if (voff < aStart) await this.writeRange(Buffer.alloc(aStart - voff), voff);
    if (aEnd < end) await this.writeRange(Buffer.alloc(end - aEnd), aEnd);
    const span = P * C;
    for (let s = aStart; s < aEnd; ) {
      const e = Math.min(aEnd, (Math.floor(s / span) + 1) * span);
      await this.zeroWithinTable(s, e, unmap);
      s = e;
      if (this.core.store.wantsCommit) await this.core.store.commit();
    }
  }

  private async zeroWithinTable(s: number, e: number, unmap: boolean): Promise<void> {
    const { geo, store, alloc } = this.core;
    const { clusterSize: C, subclusterSize: S, entrySize: E } = geo;
    const first = Math.floor(s / C);
    const last = Math.floor((e - 1) / C);
    const lock = this.lockRange(first, last, true);
    const release = typeof lock === 'function' ? lock : await lock;
    const gate = store.enter();
    if (gate) await gate;
    try {
      await this.ensureAll(first, first);
      const found = this.layer.peek(first)!;
      // No table: the span reads as zeroes already. A shared table is copied only if there is data to let go.
      if (found === null) return;
      if (!this.layer.ownsTable(found) && !this.holdsData(found, first, last)) return;
      const ref = this.layer.ownEntry(first);
      for (let vc = first; vc <= last; vc++) {
        const at = ref.at + (vc - first) * E;
        const cs = Math.max(s, vc * C);
        const ce = Math.min(e, (vc + 1) * C);
        let bits = ref.l2.readUInt32LE(at + ENTRY_ALLOC);
        for (let x = cs; x < ce; x += S) bits &= ~(1 << ((x - vc * C) / S));
        const host = readHost(ref.l2, at);
        if (host !== 0 && bits === 0 && isInherited(ref.l2, at)) writeHost(ref.l2, at, 0);
        else if (host !== 0 && bits === 0 && unmap) {
          alloc.free(host, { punch: true });
          writeHost(ref.l2, at, 0);
        }
        ref.l2.writeUInt32LE(bits >>> 0, at + ENTRY_ALLOC);
        ref.l2.writeUInt32LE(0, at + ENTRY_ZERO);
        store.markDirty(ref.l2Cluster, at, E);
      }
    } finally {
      store.exit();
      release();
    }
  }

  /**
   * A flatten step: clusters first..last get tables and clusters of the
   * layer's own for everything they inherit, under the same locks, gate and
   * undo as a write (a guest write to them waits, then lands on the copy).
   * Returns the bytes copied.
   */
  async materialize(first: number, last: number): Promise<number> {
    this.checkWritable('write', first * this.core.geo.clusterSize, 0);
    const { clusterSize: C, subclusterSize: S } = this.core.geo;
    const at = first * C;
    const lock = this.lockRange(first, last, true);
    const release = typeof lock === 'function' ? lock : await lock;
    try {
      let copied = 0;
      await this.ensureAll(first, last);
      for (let vc = first; vc <= last; vc++) {
        const ref = this.layer.peek(vc);
        if (ref) copied += popcount(this.keptBits(ref, vc, at, at)) * S;
      }
      await this.applyWrite([], at, at, last);
      return copied;
    } finally {
      release();
    }
  }

  /** Some entry of clusters first..last (one table) maps data. */
  private holdsData(ref: EntryRef, first: number, last: number): boolean {
    const E = this.core.geo.entrySize;
    for (let vc = first; vc <= last; vc++) if (ref.l2.readUInt32LE(ref.at + (vc - first) * E + ENTRY_ALLOC) !== 0) return true;
    return false;
  }

  // ---- the rest ------------------------------------------------------------------

  async flush(): Promise<void> {
    this.checkOpen('flush');
    await this.core.store.commit();
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.checkOpen('read');
    checkRange(this, 'read', offset, length);
    const out: Extent[] = [];
    await this.statusLayer(this.layer, offset, length, out);
    return out;
  }

  private async statusLayer(layer: Layer, voff: number, len: number, out: Extent[]): Promise<void> {
    const { clusterSize: C, subclusterSize: S, entriesPerL2: P } = this.core.geo;
    const push = (at: number, n: number, data: boolean): void => {
      const last = out[out.length - 1];
      if (last && last.offset + last.length === at && last.hole === !data) last.length += n;
      else out.push({ offset: at, length: n, hole: !data, zero: !data });
    };
    const end = voff + len;
    let pos = voff;
    if (layer.size < end) {
      if (pos < layer.size) await this.statusLayer(layer, pos, layer.size - pos, out);
      push(Math.max(pos, layer.size), end - Math.max(pos, layer.size), false);
      return;
    }
    while (pos < end && out.length < MAX_EXTENTS) {
      const vc = Math.floor(pos / C);
      let ref = layer.peek(vc);
      if (ref === undefined) ref = await layer.lookup(vc);
      if (ref === null) {
        const spanEnd = Math.min(end, (Math.floor(vc / P) + 1) * P * C);
        push(pos, spanEnd - pos, false);
        pos = spanEnd;
        continue;
      }
      const alloc = ref.l2.readUInt32LE(ref.at + ENTRY_ALLOC);
      const cend = Math.min(end, (vc + 1) * C);
      while (pos < cend) {
        const i = Math.floor((pos - vc * C) / S);
        const b = Math.min(cend, vc * C + (i + 1) * S);
        push(pos, b - pos, (alloc & (1 << i)) !== 0);
        pos = b;
      }
    }
  }

  /**
   * Which layer each range comes from (qemu:allocation-depth): 0 where no
   * layer holds data, 1 where the top does, 2 for its parent and so on. The
   * owner of an inherited cluster is found by walking up the chain, which
   * only this query does (reads never walk it).
   */
  async allocationDepth(offset: number, length: number): Promise<Array<{ offset: number; length: number; depth: number }>> {
    this.checkOpen('read');
    checkRange(this, 'read', offset, length);
    const { clusterSize: C, subclusterSize: S, entriesPerL2: P } = this.core.geo;
    const out: Array<{ offset: number; length: number; depth: number }> = [];
    const push = (at: number, n: number, depth: number): void => {
      const last = out[out.length - 1];
      if (last && last.offset + last.length === at && last.depth === depth) last.length += n;
      else out.push({ offset: at, length: n, depth });
    };
    const layer = this.layer;
    const end = offset + length;
    let pos = offset;
    while (pos < end && out.length < MAX_EXTENTS) {
      const vc = Math.floor(pos / C);
      const ref = await layer.lookup(vc);
      if (ref === null) {
        const spanEnd = Math.min(end, (Math.floor(vc / P) + 1) * P * C);
        push(pos, spanEnd - pos, 0);
        pos = spanEnd;
        continue;
      }
      const alloc = ref.l2.readUInt32LE(ref.at + ENTRY_ALLOC);
      const depth = alloc === 0 ? 0 : await this.ownerDepth(layer, vc, ref);
      const cend = Math.min(end, (vc + 1) * C);
      while (pos < cend) {
        const i = Math.floor((pos - vc * C) / S);
        const b = Math.min(cend, vc * C + (i + 1) * S);
        push(pos, b - pos, alloc & (1 << i) ? depth : 0);
        pos = b;
      }
    }
    return out;
  }

  private async ownerDepth(layer: Layer, vc: number, ref: EntryRef): Promise<number> {
    if (layer.owns(ref)) return 1;
    const host = readHost(ref.l2, ref.at);
    let depth = 1;
    for (let l = layer.parent; l; l = l.parent) {
      depth++;
      const r = await l.lookup(vc);
      if (r && l.owns(r) && readHost(r.l2, r.at) === host) return depth;
    }
    return depth;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.onClose();
  }

  private checkOpen(op: 'read' | 'write' | 'flush' | 'discard' | 'writeZeroes'): void {
    if (this.closed) throw new BlockDeviceError('ECLOSED', this.name, op, 'volume is closed');
  }

  private checkWritable(op: 'write' | 'discard' | 'writeZeroes', offset: number, length: number): void {
    this.checkOpen(op);
    if (this.readOnly || this.core.readOnly) throw new BlockDeviceError('EROFS', this.name, op, 'volume is read-only', offset, length);
    checkRange(this, op, offset, length);
    this.core.store.checkWritable(op);
  }
}

function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.length);
}

/** Joins writes that are contiguous both on the host and in memory into one request (one view per run, not per join). */
function coalesce(writes: Array<[number, Buffer]>): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [];
  let i = 0;
  while (i < writes.length) {
    const [off, first] = writes[i]!;
    let length = first.length;
    let j = i + 1;
    for (; j < writes.length; j++) {
      const [o, b] = writes[j]!;
      if (o !== off + length || b.buffer !== first.buffer || b.byteOffset !== first.byteOffset + length) break;
      length += b.length;
    }
    out.push([off, j === i + 1 ? first : Buffer.from(first.buffer, first.byteOffset, length)]);
    i = j;
  }
  return out;
}
