import { allocatedBytes, ReusableBuffers, Serializer, type BlockDevice } from '../blockdev/index.js';
import { Allocator } from './allocator.js';
import { COPY_POINTER_AT, decodeCatalog, emptyCatalog, encodeCatalog, readPointer, type Catalog, type CatalogLayer, type CatalogPointer } from './catalog.js';
import { dataChecksum, initChecksums, metaChecksum } from './checksum.js';
import type { PoolCore } from './core.js';
import { PoolError, damageReason } from './errors.js';
import { ENTRY_ALLOC, ENTRY_SUMS, blockOwner, geometryFor, isInherited, l1BlocksFor, readHost, readL1, type Geometry } from './geometry.js';
import { growPool, type GrowResult } from './grow.js';
import { COPY_CLUSTERS, HEADER_BYTES, INCOMPAT_COPIES, INCOMPAT_SHARED, ROOT_CLUSTER, planLayout, type PoolHeader } from './header.js';
import { headerOffsets, readHeader, writeHeader } from './header-copies.js';
import { countOwnTables, exclusiveBytes, mergeIntoChild, popcount, trimUnshared } from './shared-space.js';
import { createRoot, loadRoot, readCatalogSpares, setCatalogSpares, setRoot } from './root-copies.js';
import { mapClaims, rebuildBitmapBlock, type Claims } from './bitmap-rebuild.js';
import { volumeChain } from './volume-chain.js';
import { Layer } from './layer.js';
import { isValidName, NAME_RULE } from './names.js';
import { BlockType, TRAILER } from './metablock.js';
import { MetaStore } from './metastore.js';
import { DoubleWrite } from './doublewrite.js';
import type { CheckProblem, CheckReport, LayerInfo, PoolCreateOptions, PoolOpenOptions, PoolStats, Preallocation, VolumeInfo } from './types.js';
import { VolumeHandle } from './volume.js';
import { checkPool } from './check.js';

const DEFAULT_CLUSTER = 64 * 1024;
/** The metadata cache budget of a pool opened without `cacheBytes` (what `strata serve` runs with). */
export const DEFAULT_CACHE = 64 * 1024 * 1024;
/** Volumes up to 64 TiB; the format itself addresses 2^48 clusters. */
export const MAX_VOLUME_SIZE = 64 * 2 ** 40;
/** At most this much virtual space under in-place-write intents: the most a recovery re-reads. */
const MAX_INTENT_SPAN = 4 * 2 ** 30;

/**
 * A pool: one BlockDevice holding a catalog of thin volumes, each the top
 * layer of a chain. Administrative operations (create, delete, resize) are
 * serialized and committed before they return; I/O goes through volumes.
 */
export class Pool implements PoolCore {
  readonly store: MetaStore;
  readonly alloc: Allocator;
  readonly geo: Geometry;
  readonly counters = { repairedData: 0, corruptData: 0 };
  readonly clusterBuffers: ReusableBuffers;
  private catalog: Catalog = emptyCatalog();
  private readonly layers = new Map<number, Layer>();
  private readonly openCounts = new Map<string, number>();
  /** Open handles of each volume: a snapshot or a revert moves them to the new top layer. */
  private readonly handles = new Map<string, Set<VolumeHandle>>();
  /**
   * The reclaiming of deletes that a crash or a failure cut short, which an
   * open starts in the background: how many layers it had to free, when it
   * ends, and the error that stopped it (left for the next open to retry).
   */
  reclaimAtOpen: { layers: number; done: Promise<void>; error?: Error } = { layers: 0, done: Promise.resolve() };
  private readonly admin = new Serializer();
  /**
   * Settling (reclaim, merge, trim of nameless layers) runs one at a time
   * but beside the admin queue: a long, rate-limited merge must not hold up
   * a snapshot of another volume.
   */
  private readonly settler = new Serializer();
  /** What each frozen layer holds itself, counted once: `volume info` of a deep chain reads no table twice. */
  private readonly frozenBytes = new Map<number, number>();
  private closed = false;
  /** Catalog runs whose write failed while the root already names them: written again before any commit. */
  private readonly unwrittenCatalog = new Set<{ bytes: Buffer; offset: number }>();
  /** Journal transactions replayed when the pool was opened (non-zero after an unclean stop). */
  replayed = 0;
  /** Damage found (and on a writable pool repaired) while opening; the next check reports it. */
  readonly openProblems: CheckProblem[] = [];

  private constructor(
    readonly dev: BlockDevice,
    readonly header: PoolHeader,
    cacheBytes: number,
    readonly readOnly: boolean,
    maxIntents: number | undefined,
  ) {
    const C = header.clusterSize;
    if (maxIntents !== undefined && !(Number.isSafeInteger(maxIntents) && maxIntents >= 1)) throw new PoolError('EINVAL', `maxIntents must be a whole number of tables, at least 1 (got ${maxIntents})`);
    this.geo = geometryFor(C, header.subclusters);
    this.clusterBuffers = new ReusableBuffers(C, 32);
    this.store = new MetaStore(dev, C, {
      cacheBytes,
      journalStart: header.journalStart * C,
      journalBytes: header.journalClusters * C,
      dwStart: header.dwStart,
      dwClusters: header.dwClusters,
      maxIntents: maxIntents ?? Math.max(16, Math.floor(MAX_INTENT_SPAN / (this.geo.entriesPerL2 * C))),
      readOnly,
    });
    this.alloc = new Allocator(this.store, header);
    if (header.incompat & INCOMPAT_COPIES) this.store.journal.copyAt = (header.copiesStart + 1) * C;
    this.store.addHooks({
      beforeCommit: async () => {
        // No commit may capture a root that names catalog bytes the device does not hold.
        for (const w of [...this.unwrittenCatalog]) {
          await this.dev.write(w.bytes, w.offset);
          this.unwrittenCatalog.delete(w);
        }
      },
      onCapture: () => undefined,
      onCheckpoint: async () => undefined,
    });
  }

  private get hasCopies(): boolean {
    return (this.header.incompat & INCOMPAT_COPIES) !== 0n;
  }

  static async create(dev: BlockDevice, opts: PoolCreateOptions = {}): Promise<Pool> {
    await initChecksums();
    if (dev.readOnly) throw new PoolError('EROFS', `${dev.name}: cannot create a pool on a read-only device`);
    const header = planLayout(dev.size, opts.clusterSize ?? DEFAULT_CLUSTER, opts);
    const pool = new Pool(dev, header, opts.cacheBytes ?? DEFAULT_CACHE, false, opts.maxIntents);
    await writeHeader(dev, header);
    // The journal takes host space now, so that a host file system that fills up later cannot refuse
    // the commits that discard and delete need to give space back (checkpoints may wait; commits not).
    const C = header.clusterSize;
    await dev.writeZeroes(header.journalStart * C, header.journalClusters * C);
    await pool.store.journal.reset(1n);
    pool.alloc.format();
    createRoot(pool.store, header);
    await pool.writeCatalog();
    await pool.store.checkpoint();
    return pool;
  }

  static async open(dev: BlockDevice, opts: PoolOpenOptions = {}): Promise<Pool> {
    await initChecksums();
    if (dev.size < HEADER_BYTES) throw new PoolError('EFORMAT', `${dev.name} is not a Strata pool (only ${dev.size} bytes)`);
    const found = await readHeader(dev);
    const header = found.header;
    const readOnly = opts.readOnly ?? dev.readOnly;
    const pool = new Pool(dev, header, opts.cacheBytes ?? DEFAULT_CACHE, readOnly, opts.maxIntents);
    const notes = pool.openProblems;
    for (const b of found.bad) notes.push({ kind: 'header', hostOffset: b.offset, message: `pool header ${b.offset === 0 ? '' : 'copy '}at offset ${b.offset} is damaged (${b.why}); ${readOnly ? 'read from a copy' : 'rewritten'}`, repaired: !readOnly });
    if (readOnly) {
      const pending = await pool.store.journal.read();
      if (pending.length > 0) throw new PoolError('EBUSY', `${dev.name}: pool was not closed cleanly and needs its journal replayed; open it read-write once`);
    } else {
      pool.replayed = await pool.store.recover((l2) => pool.adoptTable(l2));
    }
    for (const d of pool.store.journal.headerDamage) {
      if (d.damaged) notes.push({ kind: 'journal', hostOffset: d.offset, message: `journal header ${d.offset === header.journalStart * header.clusterSize ? '' : 'copy '}at offset ${d.offset} is damaged (${d.why}); ${readOnly ? 'read from its copy' : 'rewritten'}`, repaired: !readOnly });
    }
    const C = header.clusterSize;
    for (const [cluster, why] of pool.store.replaySkipped) {
      notes.push({ kind: 'journal', hostOffset: cluster * C, message: `journal replay left the metadata block at offset ${cluster * C} as it was: it is damaged (${why}), so the changes journaled for it were not applied`, repaired: false });
    }
    // After recovery the double-write area is idle until the next checkpoint: a damaged head can go.
    const dw = new DoubleWrite(dev, header.dwStart, header.dwClusters, C);
    const dwWhy = await dw.headDamage().catch((err: unknown) => damageReason(err));
    if (dwWhy !== null) {
      if (!readOnly) await dw.clear();
      notes.push({ kind: 'journal', hostOffset: header.dwStart * C, message: `double-write head at offset ${header.dwStart * C} is damaged (${dwWhy})${readOnly ? '' : '; cleared'}`, repaired: !readOnly });
    }
    notes.push(...(await loadRoot(pool.store, header, readOnly)));
    const fellBack = await pool.readCatalog();
    pool.buildLayers();
    await pool.alloc.load((index, err) => pool.rebuildBitmapBlock(index, err));
    pool.alloc.setCatalogSpares(readCatalogSpares(pool.store, header));
    pool.claims = undefined;
    let repairs = notes.some((n) => n.repaired) || pool.store.journal.headerDamage.length > 0;
    if (!readOnly && fellBack) {
      // Both copies of the catalog written afresh; the damaged run is freed with the old pointers.
      const gate = pool.store.enter();
      if (gate) await gate;
      try {
        await pool.writeCatalog();
      } finally {
        pool.store.exit();
      }
      repairs = true;
    }
    if (!readOnly && found.stale.length > 0) {
      await writeHeader(dev, header, found.stale);
      await dev.flush();
    }
    if (!readOnly && repairs) {
      if (found.bad.length > 0) await writeHeader(dev, header, found.bad.map((b) => b.offset));
      // Writes the rebuilt and re-copied blocks home and both journal header copies.
      await pool.store.checkpoint();
    }
    // A delete cut short goes on in the background; a failure leaves it for the next open.
    if (!readOnly) {
      // Deletes cut short: layers being reclaimed, and nameless ones a snapshot delete left to merge or trim.
      const unsettled = [...pool.layers.values()].filter((l) => l.rec.reclaiming === true || !pool.isNamed(l)).length;
      const r: Pool['reclaimAtOpen'] = { layers: unsettled, done: Promise.resolve() };
      r.done = pool.serialize(() => pool.reclaimInterrupted()).catch((err: unknown) => void (r.error = err instanceof Error ? err : new Error(String(err))));
      pool.reclaimAtOpen = r;
    }
    return pool;
  }

  /**
   * Reads the catalog the root points at and its second copy, and takes the
   * first that verifies. Returns true when either is damaged (a writable
   * pool then writes both afresh).
   */
  private async readCatalog(): Promise<boolean> {
    const C = this.geo.clusterSize;
    const root = this.store.peek(ROOT_CLUSTER)!;
    const ptrs: CatalogPointer[] = [readPointer(root)];
    const second = readPointer(root, COPY_POINTER_AT);
    if (this.hasCopies && second.start !== 0) ptrs.push(second);
    const bad: Array<{ ptr: CatalogPointer; err: unknown }> = [];
    let chosen: CatalogPointer | undefined;
    for (const [i, ptr] of ptrs.entries()) {
      const where = `${this.dev.name}: catalog${i === 0 ? '' : ' copy'} at offset ${ptr.start * C}`;
      try {
        const bytes = Buffer.alloc(ptr.bytes);
        await this.dev.read(bytes, ptr.start * C);
        const catalog = decodeCatalog(bytes, ptr, where);
        if (!chosen) {
          this.catalog = catalog;
          chosen = ptr;
        }
      } catch (err) {
        bad.push({ ptr, err });
      }
    }
    if (!chosen) throw bad[0]!.err;
    this.alloc.catalogReserve = this.catalogReserveFor(chosen.clusters);
    for (const { ptr, err } of bad) {
      const why = err instanceof Error ? err.message : String(err);
      this.openProblems.push({ kind: 'catalog', hostOffset: ptr.start * C, message: `${why}; ${this.readOnly ? 'read from the other copy' : 'both copies rewritten'}`, repaired: !this.readOnly });
    }
    return bad.length > 0;
  }

  private catalogReserveFor(clusters: number): number {
    return this.hasCopies ? 2 * clusters + 2 : clusters + 1;
  }

  /**
   * A bitmap block that fails to load: rebuilt from what it still says and
   * every cluster the maps claim (docs/FORMAT.md), and put in its place —
   * written home at the next checkpoint on a writable pool, only in memory
   * on a read-only one.
   */
  private async rebuildBitmapBlock(index: number, err: unknown): Promise<Buffer> {
    const C = this.geo.clusterSize;
    const cluster = this.header.bitmapStart + index;
    const damaged = Buffer.alloc(C);
    await this.dev.read(damaged, cluster * C).catch(() => undefined);
    this.claims ??= await mapClaims(this.store, this.geo, this.header.totalClusters, this.layers.values(), this.fixedClaims());
    const { content, restored } = rebuildBitmapBlock(damaged, index, this.header, this.claims);
    let buf: Buffer;
    if (this.readOnly) {
      buf = Buffer.alloc(C);
      content.copy(buf);
      this.store.install(cluster, buf, BlockType.Bitmap, index);
    } else {
      buf = this.store.create(cluster, BlockType.Bitmap, index, true);
      content.copy(buf);
      this.store.markDirty(cluster, 0, C - TRAILER);
    }
    const why = damageReason(err);
    this.openProblems.push({
      kind: 'bitmap',
      hostOffset: cluster * C,
      message: `allocation bitmap block ${index} at offset ${cluster * C} is damaged (${why}); rebuilt from the maps (${restored} cluster${restored === 1 ? '' : 's'} in use that it called free)${this.readOnly ? ' in memory only' : ''}`,
      repaired: !this.readOnly,
    });
    return buf;
  }

  /** What the maps claim, while damaged bitmap blocks are rebuilt at open. */
  private claims: Claims | undefined;

  /** Clusters in use outside the layer maps: the catalog runs, and the copies region when it lies in the data area. */
  private fixedClaims(): number[] {
    const out: number[] = [];
    for (const r of this.catalogClusters()) for (let c = r.start; c < r.start + r.clusters; c++) out.push(c);
    if (this.hasCopies) for (let c = this.header.copiesStart; c < this.header.copiesStart + COPY_CLUSTERS; c++) if (c < this.header.totalClusters) out.push(c);
    return out;
  }

  /**
   * After a crash, data under an intent may have been overwritten in place,
   * torn or not: recompute the checksum of every allocated sub-cluster of the
   * table from what the device holds, so that each sector reads old or new.
   */
  private async adoptTable(l2: Buffer): Promise<void> {
    const { clusterSize: C, entriesPerL2: P, entrySize: E, subclusters: n, subclusterSize: S } = this.geo;
    const data = Buffer.alloc(C);
    for (let e = 0; e < P; e++) {
      const at = e * E;
      const host = readHost(l2, at);
      const bits = l2.readUInt32LE(at + ENTRY_ALLOC);
      if (host === 0 || bits === 0 || host >= this.header.totalClusters) continue;
      await this.dev.read(data, host * C);
      for (let i = 0; i < n; i++) if (bits & (1 << i)) l2.writeUInt32LE(dataChecksum(data.subarray(i * S, (i + 1) * S)), at + ENTRY_SUMS + 4 * i);
    }
  }

  // ---- catalog -------------------------------------------------------------

  private buildLayers(): void {
    this.layers.clear();
    const recs = new Map(this.catalog.layers.map((l) => [l.id, l]));
    const make = (id: number): Layer => {
      const have = this.layers.get(id);
      if (have) return have;
      const rec = recs.get(id);
      if (!rec) throw new PoolError('ECORRUPT', `${this.dev.name}: catalog refers to missing layer ${id}`);
      const layer = new Layer(rec, rec.parent === null ? null : make(rec.parent), this);
      this.layers.set(id, layer);
      return layer;
    };
    for (const l of this.catalog.layers) make(l.id);
  }

  /**
   * Writes the catalog into fresh clusters and switches the root to it
   * (journaled; committed by the caller). The allocation, the switch and the
   * freeing of the old run happen before the first await.
   */
  private writeCatalog(): Promise<void> {
    const C = this.geo.clusterSize;
    const bytes = encodeCatalog(this.catalog);
    const clusters = Math.max(1, Math.ceil(bytes.length / C));
    // Runs the last rewrite left first: catalog runs are never punched, so they are still backed by
    // the host, and a host file system that is full can still take the catalog of a delete.
    const spares = readCatalogSpares(this.store, this.header).filter((r) => r.clusters >= clusters);
    const takeSpare = (): number | undefined => {
      for (let r = spares.shift(); r; r = spares.shift()) if (this.alloc.allocateAt(r.start, clusters)) return r.start;
      return undefined;
    };
    const start = takeSpare() ?? this.alloc.allocateRun(clusters, { catalog: true });
    let second: number | undefined;
    if (this.hasCopies) {
      second = takeSpare();
      if (second === undefined) {
        try {
          second = this.alloc.allocateRun(clusters, { catalog: true });
        } catch {
          // A pool too full for two copies keeps one until space is freed.
          second = undefined;
        }
      }
    }
    this.alloc.catalogReserve = this.catalogReserveFor(clusters);
    const padded = Buffer.alloc(clusters * C);
    bytes.copy(padded);
    const old = this.catalogClusters();
    const hash = metaChecksum(bytes);
    setRoot(this.store, this.header, { start, clusters, bytes: bytes.length, hash }, second === undefined ? undefined : { start: second, clusters, bytes: bytes.length, hash });
    // Catalog clusters are written directly, never through the journal: free after the commit.
    setCatalogSpares(this.store, this.header, old);
    this.alloc.setCatalogSpares(old);
    for (const r of old) for (let c = r.start; c < r.start + r.clusters; c++) this.alloc.free(c);
    const writes = [start, ...(second === undefined ? [] : [second])].map((at) => ({ bytes: padded, offset: at * C }));
    for (const w of writes) this.unwrittenCatalog.add(w);
    // A write that fails stays listed: it is written again before any commit (see beforeCommit).
    return Promise.allSettled(writes.map((w) => this.dev.write(w.bytes, w.offset).then(() => this.unwrittenCatalog.delete(w)))).then((results) => {
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    });
  }

  /**
   * Changes the catalog together with the metadata that goes with it, as one
   * step that no commit can split (a volume being written commits whenever its
   * client flushes): `change` runs synchronously under the write gate, and the
   * new catalog reaches the device before the gate opens again, so a commit
   * captures all of it or none. `change` returns false when a block it needs
   * is not in memory; then `prepare` loads and it runs again. Commits.
   */
  private async changeCatalog(change: () => boolean | void, prepare?: () => Promise<void>, changed?: () => void): Promise<void> {
    for (;;) {
      const gate = this.store.enter();
      if (gate) await gate;
      let done = false;
      try {
        if (change() !== false) {
          await this.writeCatalog();
          done = true;
        }
      } finally {
        this.store.exit();
      }
      if (done) break;
      await prepare?.();
    }
    // Before the commit: a snapshot lets writes go on as soon as the new top is in place.
    changed?.();
    await this.store.commit();
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    return this.admin.run(fn);
  }

  private volumeRec(name: string): Catalog['volumes'][number] {
    const v = this.catalog.volumes.find((x) => x.name === name);
    if (!v) throw new PoolError('ENOENT', `volume '${name}' not found in pool ${this.dev.name}`);
    return v;
  }

  private checkAdmin(): void {
    if (this.closed) throw new PoolError('EINVAL', `pool ${this.dev.name} is closed`);
    if (this.readOnly) throw new PoolError('EROFS', `pool ${this.dev.name} is open read-only`);
    if (this.store.fence) throw this.store.fence;
  }

  // ---- volumes ---------------------------------------------------------------

  /** `incomplete` marks the volume as being filled (see completeVolume). */
  async createVolume(name: string, size: number, opts: { preallocation?: Preallocation; incomplete?: boolean } = {}): Promise<VolumeInfo> {
    return this.serialize(async () => {
      this.checkAdmin();
      if (!isValidName(name)) throw new PoolError('EINVAL', `invalid volume name '${name}' (${NAME_RULE})`);
      if (this.catalog.volumes.some((v) => v.name === name)) throw new PoolError('EEXIST', `volume '${name}' already exists`);
      if (this.catalog.templates.some((t) => t.name === name)) throw new PoolError('EEXIST', `template '${name}' already exists`);
      size = checkSize(size);
      await this.changeCatalog(() => {
        const l1Blocks = l1BlocksFor(this.geo, size);
        const l1Start = this.alloc.allocateRun(l1Blocks);
        const id = this.catalog.nextLayerId++;
        for (let i = 0; i < l1Blocks; i++) this.store.create(l1Start + i, BlockType.L1, id);
        const now = new Date().toISOString();
        const rec: CatalogLayer = { id, parent: null, size, l1Start, l1Blocks, frozen: false, created: now };
        this.catalog.layers.push(rec);
        this.catalog.volumes.push({ name, layer: id, size, created: now, readOnly: false, ...(opts.incomplete === true ? { incomplete: true as const } : {}) });
        this.layers.set(id, new Layer(rec, null, this));
      });
      const prealloc = opts.preallocation ?? 'off';
      if (prealloc !== 'off') await this.preallocate(name, prealloc);
      return this.infoOf(name);
    });
  }

  private async preallocate(name: string, mode: Preallocation): Promise<void> {
    const layer = this.layers.get(this.volumeRec(name).layer)!;
    const { clusterSize: C, entriesPerL2: P } = this.geo;
    const clusters = Math.ceil(layer.size / C);
    for (let vc = 0; vc < clusters; vc += P) {
      await layer.ensure(vc);
      if (layer.peek(vc) === null) layer.createTable(vc);
      if (this.store.wantsCommit) await this.store.commit();
    }
    await this.store.commit();
    if (mode === 'full') {
      const vol = this.handle(name, layer, false);
      const zero = Buffer.alloc(Math.min(4 << 20, layer.size));
      for (let off = 0; off < layer.size; off += zero.length) await vol.write(zero.subarray(0, Math.min(zero.length, layer.size - off)), off);
      await vol.close();
      await this.store.commit();
    }
  }

  /** Marks a volume as being filled again (a migration's target, until its pivot), in one commit. */
  async markIncomplete(name: string): Promise<void> {
    return this.serialize(async () => {
      this.checkAdmin();
      const v = this.volumeRec(name);
      if (v.incomplete) return;
      await this.changeCatalog(() => {
        v.incomplete = true;
      });
    });
  }

  /**
   * Clears a volume's incomplete mark in the commit that also makes every
   * write to it so far durable (a commit flushes data before it appends the
   * catalog's change), so the mark is gone only once the contents are there.
   */
  async completeVolume(name: string): Promise<void> {
    return this.serialize(async () => {
      this.checkAdmin();
      const v = this.volumeRec(name);
      if (v.incomplete === undefined) return this.store.commit();
      await this.changeCatalog(() => {
        delete v.incomplete;
      });
    });
  }

  /**
   * Deletes a volume in two steps: the volume leaves the catalog at once and
   * its layer is marked as being reclaimed (one commit); then its clusters are
   * freed a table at a time, each table's entry in the L1 cleared in the same
   * step, so that a power loss at any point leaves a pool whose maps and
   * bitmap agree, and the next open finishes the work.
   */
  async deleteVolume(name: string): Promise<void> {
    return this.serialize(async () => {
      this.checkAdmin();
      const v = this.volumeRec(name);
      if ((this.openCounts.get(name) ?? 0) > 0) throw new PoolError('EBUSY', `volume '${name}' is in use`);
      const snaps = this.catalog.snapshots.filter((x) => x.volume === name);
      if (snaps.length > 0) throw new PoolError('EBUSY', `volume '${name}' has snapshots (${snaps.map((x) => `${name}@${x.name}`).join(', ')}); delete them first`);
      const layer = this.layers.get(v.layer)!;
      await this.changeCatalog(() => {
        this.catalog.volumes = this.catalog.volumes.filter((x) => x !== v);
        layer.rec.reclaiming = true;
      });
      await this.reclaimAndSettle(layer);
    });
  }

  /**
   * Deletes a volume with every snapshot of it in one commit (a migration's
   * source, once its copy is durable elsewhere): the names go and all their
   * layers are marked reclaiming together, then freed deepest first, so no
   * merge runs between layers that are all going. Refused while any of them
   * is open, or while something outside the chain (a clone of one of its
   * snapshots) still reads from it.
   */
  async deleteVolumeChain(name: string): Promise<void> {
    return this.serialize(async () => {
      this.checkAdmin();
      this.volumeRec(name);
      const snaps = this.catalog.snapshots.filter((x) => x.volume === name);
      const open = [name, ...snaps.map((x) => `${name}@${x.name}`)].filter((n) => (this.openCounts.get(n) ?? 0) > 0);
      if (open.length > 0) throw new PoolError('EBUSY', `${open.join(', ')} ${open.length === 1 ? 'is' : 'are'} in use`);
      const chain = volumeChain(this.catalog, this.layers, name);
      if (chain.dependants.length > 0) throw new PoolError('EBUSY', `volume '${name}' has snapshots that ${chain.dependants.join(', ')} ${chain.dependants.length === 1 ? 'depends' : 'depend'} on`);
      const base = chain.layers[chain.layers.length - 1]?.parent ?? null;
      await this.changeCatalog(() => {
        this.catalog.volumes = this.catalog.volumes.filter((x) => x.name !== name);
        this.catalog.snapshots = this.catalog.snapshots.filter((x) => x.volume !== name);
        for (const l of chain.layers) l.rec.reclaiming = true;
      });
      await this.settler.run(async () => {
        for (const l of chain.layers) {
          this.frozenBytes.delete(l.id);
          await this.reclaimLayer(l);
        }
        if (base) await this.settleNow(base);
      });
    });
  }

  /** Frees every cluster a layer being reclaimed owns, then the layer itself. */
  private async reclaimLayer(layer: Layer): Promise<void> {
    await this.dropTables(layer, 0);
    await this.changeCatalog(() => {
      for (let b = 0; b < layer.rec.l1Blocks; b++) {
        this.store.forget(layer.rec.l1Start + b);
        this.alloc.free(layer.rec.l1Start + b, { metadata: true, punch: true });
      }
      this.catalog.layers = this.catalog.layers.filter((l) => l.id !== layer.id);
      this.layers.delete(layer.id);
    });
  }

  /**
   * Frees the L2 tables of a layer that map virtual clusters from `fromVc`
   * on, with the data they point at. Each table goes in one synchronous step
   * under the write gate, its L1 entry cleared in the same step, so every
   * commit sees a map and a bitmap that agree.
   */
  private async dropTables(layer: Layer, fromVc: number): Promise<void> {
    const { entriesPerL2: P, entrySize: E } = this.geo;
    for await (const [firstVc, l2c] of layer.tables()) {
      if (firstVc < fromVc) continue;
      for (;;) {
        await layer.ensure(firstVc);
        const gate = this.store.enter();
        if (gate) await gate;
        try {
          const ref = layer.peek(firstVc);
          if (ref === undefined) continue;
          if (ref === null || ref.l2Cluster !== l2c) break;
          layer.clearTable(firstVc);
          // A table shared from an ancestor, and the clusters it inherited, stay with their owner.
          if (!layer.ownsTable(ref)) break;
          for (let i = 0; i < P; i++) {
            const host = readHost(ref.l2, i * E);
            if (host !== 0 && !isInherited(ref.l2, i * E)) this.alloc.free(host, { punch: true });
          }
          this.store.forget(l2c);
          this.alloc.free(l2c, { metadata: true, punch: true });
          break;
        } finally {
          this.store.exit();
        }
      }
      if (this.store.wantsCommit) await this.store.commit();
    }
  }

  /** Finishes the reclaiming and merging that a crash or a failure interrupted. */
  private async reclaimInterrupted(): Promise<void> {
    await this.settler.run(async () => {
      // Children first: a layer's tables may be shared by a child still waiting to be freed.
      const depth = (l: Layer): number => (l.parent ? depth(l.parent) + 1 : 0);
      const reclaiming = [...this.layers.values()].filter((l) => l.rec.reclaiming).sort((a, b) => depth(b) - depth(a));
      for (const layer of reclaiming) await this.reclaimLayer(layer);
      for (const layer of [...this.layers.values()]) if (this.layers.get(layer.id) === layer && !this.isNamed(layer)) await this.settleNow(layer);
    });
  }

  // ---- chains (the primitives src/snapshot builds on) ---------------------------

  /** The catalog as it is now; chain operations change it only inside changeChain. */
  get catalogNow(): Readonly<Catalog> {
    return this.catalog;
  }

  layerById(id: number): Layer {
    const l = this.layers.get(id);
    if (!l) throw new PoolError('ECORRUPT', `${this.dev.name}: catalog refers to missing layer ${id}`);
    return l;
  }

  /** The layers whose parent is `layer`. */
  childrenOf(layer: Layer): Layer[] {
    return [...this.layers.values()].filter((l) => l.parent === layer && !l.rec.reclaiming);
  }

  /** A volume, snapshot or template refers to the layer. */
  isNamed(layer: Layer): boolean {
    const id = layer.id;
    const c = this.catalog;
    return c.volumes.some((v) => v.layer === id) || c.snapshots.some((x) => x.layer === id) || c.templates.some((t) => t.layer === id);
  }

  /**
   * Runs a chain operation serialized with the other administrative ones:
   * `change` runs synchronously under the write gate with the catalog, the
   * map blocks it makes and the catalog's rewrite in one transaction (the
   * blocks it reads held in memory beforehand: holdMaps); `changed` runs as
   * soon as the catalog is written, before the commit. Commits.
   */
  async changeChain<T>(fn: (change: (c: () => void, changed?: () => void) => Promise<void>) => Promise<T>): Promise<T> {
    return this.serialize(async () => {
      this.checkAdmin();
      return fn((c, changed) => this.changeCatalog(c, undefined, changed));
    });
  }

  /** Frees a layer marked reclaiming (in the change that took its last name), then settles its parent. */
  async reclaimAndSettle(layer: Layer): Promise<void> {
    await this.settler.run(async () => {
      const parent = layer.parent;
      await this.reclaimLayer(layer);
      if (parent) await this.settleNow(parent);
    });
  }

  /** Loads every L1 block of the layers and holds them in memory (a synchronous step copies them) until released. */
  async holdMaps(layers: Layer[]): Promise<() => void> {
    const releases: Array<() => void> = [];
    for (const l of layers) {
      for (let b = 0; b < l.rec.l1Blocks; b++) {
        for (;;) {
          await this.store.load(l.rec.l1Start + b, BlockType.L1, l.id);
          const r = this.store.hold(l.rec.l1Start + b);
          if (r) {
            releases.push(r);
            break;
          }
        }
      }
    }
    return () => releases.forEach((r) => r());
  }

  /**
   * A new layer whose map is a copy of `source`'s L1: it shares every table
   * (and through them every cluster) with `source` until it writes. Only
   * the L1 blocks are new, so this takes the same time at any volume size.
   * Synchronous, under the gate, with `source`'s L1 held in memory (holdMaps).
   */
  branchLayer(source: Layer, frozen: boolean): Layer {
    const C = this.geo.clusterSize;
    const blocks: Buffer[] = [];
    for (let b = 0; b < source.rec.l1Blocks; b++) {
      const buf = this.store.peek(source.rec.l1Start + b);
      if (!buf) throw new Error(`internal: L1 block ${b} of layer ${source.id} not held in memory`);
      blocks.push(buf);
    }
    const id = this.catalog.nextLayerId++;
    const l1Start = this.alloc.allocateRun(blocks.length);
    blocks.forEach((src, b) => {
      const fresh = this.store.create(l1Start + b, BlockType.L1, id);
      src.copy(fresh, 0, 0, C - TRAILER);
      this.store.markDirty(l1Start + b, 0, C - TRAILER);
    });
    const rec: CatalogLayer = { id, parent: source.id, size: source.rec.size, l1Start, l1Blocks: blocks.length, frozen, created: new Date().toISOString() };
    this.catalog.layers.push(rec);
    const layer = new Layer(rec, source, this);
    this.layers.set(id, layer);
    return layer;
  }

  /**
   * Sets the feature bit that tells older builds to keep away (docs/FORMAT.md),
   * before the first layer shares anything: the copies first, then sector 0,
   * each flushed, so a crash leaves either header and both are right.
   */
  async enableSharing(): Promise<void> {
    if (this.header.incompat & INCOMPAT_SHARED) return;
    const next = { ...this.header, incompat: this.header.incompat | INCOMPAT_SHARED };
    const offsets = headerOffsets(next, this.dev.size);
    await writeHeader(this.dev, next, offsets.slice(1));
    await this.dev.flush();
    await writeHeader(this.dev, next, offsets.slice(0, 1));
    await this.dev.flush();
    this.header.incompat = next.incompat;
  }

  /** Open handles of a volume, snapshot or template (by the name it was opened under). */
  openCount(name: string): number {
    return this.openCounts.get(name) ?? 0;
  }

  /** The handles of a volume, which a snapshot or revert moves onto its new top (holding the old top's whole range). */
  handlesOf(volume: string): VolumeHandle[] {
    return [...(this.handles.get(volume) ?? [])];
  }

  /** A read-only handle on a frozen layer, counted under `name` (`vol@snap`, `tmpl`). */
  openLayer(layer: Layer, name: string): VolumeHandle {
    if (this.closed) throw new PoolError('EINVAL', `pool ${this.dev.name} is closed`);
    return this.handle(name, layer, true);
  }

  /** Bytes of data the layer alone holds (what removing it would free). Metadata only. */
  async exclusiveBytes(layer: Layer): Promise<number> {
    return exclusiveBytes(this, layer, this.childrenOf(layer));
  }

  /**
   * After the last name of a layer is gone: a layer nothing depends on is
   * reclaimed, one with a single child merges into it, one shared by several
   * gives back what none of them reads and stays as their base. Runs again
   * on the parent when that loses a child. Returns the data bytes freed.
   */
  settleLayer(layer: Layer, progress?: (done: number, total: number) => Promise<void> | void): Promise<number> {
    return this.settler.run(() => this.settleNow(layer, progress));
  }

  private async settleNow(layer: Layer, progress?: (done: number, total: number) => Promise<void> | void): Promise<number> {
    if (this.isNamed(layer) || this.layers.get(layer.id) !== layer) return 0;
    const children = this.childrenOf(layer);
    this.frozenBytes.delete(layer.id);
    for (const c of children) this.frozenBytes.delete(c.id);
    const parent = layer.parent;
    const total = await countOwnTables(layer);
    const step = (n: number): Promise<void> | void => progress?.(n, total);
    let freed: number;
    if (children.length === 0) {
      freed = await this.exclusiveBytes(layer);
      await this.changeCatalog(() => {
        layer.rec.reclaiming = true;
      });
      await this.reclaimLayer(layer);
      await step(total);
    } else if (children.length === 1) {
      const child = children[0]!;
      freed = await mergeIntoChild(this, layer, child, step);
      await this.changeCatalog(() => {
        // A flatten may have cut the child loose meanwhile.
        if (child.parent === layer) {
          child.parent = parent;
          child.rec.parent = parent?.id ?? null;
        }
        for (let b = 0; b < layer.rec.l1Blocks; b++) {
          this.store.forget(layer.rec.l1Start + b);
          this.alloc.free(layer.rec.l1Start + b, { metadata: true, punch: true });
        }
        this.catalog.layers = this.catalog.layers.filter((l) => l.id !== layer.id);
        this.layers.delete(layer.id);
      });
      // Counted while the merge ran, perhaps: the child's own data is what it is now.
      this.frozenBytes.delete(child.id);
      return freed;
    } else {
      freed = await trimUnshared(this, layer, children, step);
      this.frozenBytes.delete(layer.id);
      return freed;
    }
    if (parent) freed += await this.settleNow(parent, progress);
    return freed;
  }

  async resizeVolume(name: string, size: number, opts: { force?: boolean } = {}): Promise<void> {
    return this.serialize(async () => {
      this.checkAdmin();
      const v = this.volumeRec(name);
      const layer = this.layers.get(v.layer)!;
      size = checkSize(size);
      if (size < layer.size) {
        const kept = await this.allocatedBeyond(layer, size);
        if (kept > 0 && !opts.force) {
          throw new PoolError('EINVAL', `shrinking '${name}' to ${size} bytes would discard ${kept} allocated bytes beyond that point (resize with force to discard them)`);
        }
        const vol = this.handle(name, layer, false);
        await vol.discard(size, layer.size - size);
        await vol.close();
        // Tables wholly past the new end would be kept by the map but never used again.
        const P = this.geo.entriesPerL2;
        await this.dropTables(layer, Math.ceil(Math.ceil(size / this.geo.clusterSize) / P) * P);
      }
      const need = l1BlocksFor(this.geo, size);
      await this.changeCatalog(
        () => {
          if (need > layer.rec.l1Blocks && !this.growL1(layer, need)) return false;
          layer.rec.size = size;
          v.size = size;
          return true;
        },
        () => this.loadL1(layer),
      );
    });
  }

  private async loadL1(layer: Layer): Promise<void> {
    for (let b = 0; b < layer.rec.l1Blocks; b++) await this.store.load(layer.rec.l1Start + b, BlockType.L1, layer.id);
  }

  /**
   * Moves a layer's L1 table to a larger contiguous run; synchronous, so no
   * write can change the old table between the copy and the switch. False
   * (nothing done) when a block of the old table is not in memory.
   */
  private growL1(layer: Layer, blocks: number): boolean {
    const old: Buffer[] = [];
    for (let b = 0; b < layer.rec.l1Blocks; b++) {
      const buf = this.store.peek(layer.rec.l1Start + b);
      if (!buf) return false;
      old.push(buf);
    }
    const start = this.alloc.allocateRun(blocks);
    for (let b = 0; b < blocks; b++) {
      const fresh = this.store.create(start + b, BlockType.L1, layer.id);
      if (b < old.length) {
        old[b]!.copy(fresh, 0, 0, fresh.length - 16);
        this.store.markDirty(start + b, 0, fresh.length - 16);
      }
    }
    for (let b = 0; b < layer.rec.l1Blocks; b++) {
      this.store.forget(layer.rec.l1Start + b);
      this.alloc.free(layer.rec.l1Start + b, { metadata: true });
    }
    layer.rec.l1Start = start;
    layer.rec.l1Blocks = blocks;
    return true;
  }

  private async allocatedBeyond(layer: Layer, size: number): Promise<number> {
    const vol = this.handle('(scan)', layer, true);
    try {
      return await allocatedBytes(vol, size);
    } finally {
      await vol.close();
    }
  }

  async openVolume(name: string, opts: { readOnly?: boolean } = {}): Promise<VolumeHandle> {
    if (this.closed) throw new PoolError('EINVAL', `pool ${this.dev.name} is closed`);
    const v = this.volumeRec(name);
    return this.handle(name, this.layers.get(v.layer)!, (opts.readOnly ?? false) || v.readOnly || this.readOnly);
  }

  private handle(name: string, layer: Layer, readOnly: boolean): VolumeHandle {
    this.openCounts.set(name, (this.openCounts.get(name) ?? 0) + 1);
    let set = this.handles.get(name);
    if (!set) this.handles.set(name, (set = new Set()));
    const h: VolumeHandle = new VolumeHandle(this, layer, name, readOnly, () => {
      this.openCounts.set(name, (this.openCounts.get(name) ?? 1) - 1);
      set.delete(h);
    });
    set.add(h);
    return h;
  }

  // ---- information -------------------------------------------------------------

  stats(): PoolStats {
    const h = this.header;
    return {
      uuid: h.uuid,
      clusterSize: h.clusterSize,
      subclusterSize: this.geo.subclusterSize,
      deviceSize: this.dev.size,
      totalClusters: h.totalClusters,
      usedClusters: this.alloc.usedClusters,
      freeClusters: this.alloc.freeClusters,
      volumes: this.catalog.volumes.length,
      layers: this.catalog.layers.length,
      journalBytes: h.journalClusters * h.clusterSize,
      ...(this.reclaimAtOpen.error ? { reclaimError: this.reclaimAtOpen.error.message } : {}),
    };
  }

  /** The catalog's volumes as they are now, without walking any map (cheap: a server asks on every connection). */
  volumeRecords(): Array<{ name: string; size: number; readOnly: boolean; incomplete: boolean }> {
    return this.catalog.volumes.map((v) => ({ name: v.name, size: v.size, readOnly: v.readOnly, incomplete: v.incomplete === true }));
  }

  async listVolumes(): Promise<VolumeInfo[]> {
    const out: VolumeInfo[] = [];
    for (const v of this.catalog.volumes) out.push(await this.infoOf(v.name));
    return out;
  }

  async volumeInfo(name: string): Promise<VolumeInfo> {
    return this.infoOf(name);
  }

  private async infoOf(name: string): Promise<VolumeInfo> {
    const v = this.volumeRec(name);
    const layers: LayerInfo[] = [];
    for (let l: Layer | null = this.layers.get(v.layer)!; l; l = l.parent) {
      layers.push({ id: l.id, parent: l.rec.parent, frozen: l.rec.frozen, allocatedBytes: await this.layerAllocated(l) });
    }
    return { name, size: v.size, allocatedBytes: layers[0]!.allocatedBytes, created: v.created, readOnly: v.readOnly, incomplete: v.incomplete === true, layers };
  }

  /** Bytes of data a layer holds itself: the allocated sub-clusters of its own clusters. Reads every L2 table of the layer. */
  async layerAllocated(layer: Layer): Promise<number> {
    // A frozen layer changes only when it is settled (merged into, trimmed), which forgets this.
    const known = layer.rec.frozen ? this.frozenBytes.get(layer.id) : undefined;
    if (known !== undefined) return known;
    const bytes = await this.countAllocated(layer);
    if (layer.rec.frozen) this.frozenBytes.set(layer.id, bytes);
    return bytes;
  }

  private async l1Block(layer: Layer, b: number): Promise<Buffer | undefined> {
    return this.store.peek(layer.rec.l1Start + b) ?? (await this.store.load(layer.rec.l1Start + b, BlockType.L1, layer.id).catch(() => undefined));
  }

  private async countAllocated(layer: Layer): Promise<number> {
    const { entriesPerL2: P, entrySize: E, subclusterSize: S } = this.geo;
    let subclusters = 0;
    // A damaged table counts as empty here (check reports it): one bad block must not hide every volume's listing.
    for (let b = 0; b < layer.rec.l1Blocks; b++) {
      let l1: Buffer;
      try {
        l1 = this.store.peek(layer.rec.l1Start + b) ?? (await this.store.load(layer.rec.l1Start + b, BlockType.L1, layer.id));
      } catch {
        continue;
      }
      // A table the parent's L1 names at the same place is the parent's or an ancestor's, never this layer's
      // own (a merge that hands one down clears the parent's entry in the same step): no need to read it.
      const parent = layer.parent && b < layer.parent.rec.l1Blocks ? await this.l1Block(layer.parent, b) : undefined;
      for (let j = 0; j < this.geo.entriesPerL1Block; j++) {
        const l2c = readL1(l1, j);
        if (l2c === 0 || (parent && readL1(parent, j) === l2c)) continue;
        const l2 = this.store.peek(l2c) ?? (await this.store.load(l2c, BlockType.L2, undefined).catch(() => undefined));
        if (!l2 || blockOwner(l2) !== layer.id) continue;
        for (let i = 0; i < P; i++) if (!isInherited(l2, i * E)) subclusters += popcount(l2.readUInt32LE(i * E + ENTRY_ALLOC));
      }
    }
    return subclusters * S;
  }

  /**
   * Takes in the space of a device that has grown since the pool was made
   * (see grow.ts for the crash-safe order). The device must already be larger.
   */
  async grow(): Promise<GrowResult> {
    if (this.readOnly) throw new PoolError('EROFS', `pool ${this.dev.name} is open read-only: growing it needs to write`);
    return this.serialize(async () => {
      const r = await growPool(this.dev, this.header, this.store, this.alloc);
      this.claims = undefined;
      return r;
    });
  }

  /** Walks every structure; see check.ts. */
  async check(opts: { repair?: boolean } = {}): Promise<CheckReport> {
    if (opts.repair && this.readOnly) throw new PoolError('EROFS', `pool ${this.dev.name} is open read-only: a repairing check needs to write`);
    return this.serialize(async () => {
      // A merge changes maps a table at a time: the walk waits for it to end.
      await this.settler.idle();
      // The walk reads metadata through the store, so it needs no checkpoint; a host that is full
      // (the checkpoint cannot write home yet) must not stop a check. A stopped pool still throws.
      // A read-only open found the journal empty (or refused to open): the metadata is settled already.
      if (!this.readOnly) {
        await this.store.checkpoint().catch((err: unknown) => {
          if (this.store.fence) throw err;
        });
      }
      const added = opts.repair && !this.readOnly && !this.hasCopies ? await this.addCopies() : undefined;
      const volumeOf = (id: number): string | undefined => this.catalog.volumes.find((v) => v.layer === id)?.name;
      const copies = this.hasCopies && this.header.copiesStart < this.header.totalClusters ? { start: this.header.copiesStart, clusters: COPY_CLUSTERS } : undefined;
      const report = await checkPool(this, [...this.layers.values()], this.catalogClusters(), opts.repair ?? false, volumeOf, copies);
      if (report.repaired > 0) await this.store.checkpoint();
      // What opening the pool found and mended comes first, once.
      const found = this.openProblems.splice(0);
      if (added) found.push(added);
      report.problems.unshift(...found);
      report.repaired += found.filter((p) => p.repaired).length;
      return report;
    });
  }

  /**
   * Gives a pool from an earlier build the copies of header, root, catalog
   * and journal header (check --repair). The copies region comes from the
   * data area; everything it needs is made durable by a checkpoint before
   * the header that names it is written, so a crash in between leaves only
   * the region and the catalog's copy as leaked clusters (the next
   * check --repair frees them and starts again). Builds that do not know the
   * copies refuse the pool from then on.
   */
  private async addCopies(): Promise<CheckProblem | undefined> {
    const C = this.geo.clusterSize;
    const gate = this.store.enter();
    if (gate) await gate;
    let start: number;
    try {
      try {
        start = this.alloc.allocateRun(COPY_CLUSTERS);
      } catch {
        return undefined;
      }
      this.header.copiesStart = start;
      this.header.incompat |= INCOMPAT_COPIES;
      this.store.journal.copyAt = (start + 1) * C;
      const copy = this.store.create(start, BlockType.Root, 1, true);
      this.store.peek(ROOT_CLUSTER)!.copy(copy, 0, 0, C - TRAILER);
      this.store.markDirty(start, 0, C - TRAILER);
      await this.writeCatalog();
    } finally {
      this.store.exit();
    }
    // The journal's reset at the end of the checkpoint writes both of its header copies.
    await this.store.checkpoint();
    await writeHeader(this.dev, this.header);
    await this.dev.flush();
    return { kind: 'header', hostOffset: 0, message: `the pool kept no copies of its header, root block, catalog and journal header; added them (copies region at offset ${start * C})`, repaired: true };
  }

  /** The catalog's runs: the one the root points at, and its second copy. */
  /**
   * A check of a pool that is being served: read-only, repairing nothing,
   * with writes held at the gate for the walk so that it sees maps, bitmap
   * and data that agree (reads go on). Returns how long writes were held.
   */
  async checkOnline(): Promise<CheckReport & { heldWritesMs: number }> {
    return this.serialize(async () => {
      await this.store.checkpoint().catch((err: unknown) => {
        if (this.store.fence) throw err;
      });
      const volumeOf = (id: number): string | undefined => this.catalog.volumes.find((v) => v.layer === id)?.name;
      const copies = this.hasCopies && this.header.copiesStart < this.header.totalClusters ? { start: this.header.copiesStart, clusters: COPY_CLUSTERS } : undefined;
      const started = performance.now();
      let held = 0;
      const report = await this.store.exclusive(async () => {
        const r = await checkPool(this, [...this.layers.values()], this.catalogClusters(), false, volumeOf, copies);
        held = performance.now() - started;
        return r;
      });
      report.problems.unshift(...this.openProblems.splice(0));
      return { ...report, heldWritesMs: Math.round(held) };
    });
  }

  private catalogClusters(): Array<{ start: number; clusters: number }> {
    const root = this.store.peek(ROOT_CLUSTER)!;
    const out: Array<{ start: number; clusters: number }> = [];
    for (const p of this.hasCopies ? [readPointer(root), readPointer(root, COPY_POINTER_AT)] : [readPointer(root)]) if (p.start !== 0) out.push({ start: p.start, clusters: p.clusters });
    return out;
  }

  async flush(): Promise<void> {
    await this.store.commit();
  }

  /** Checkpoints (so the next open replays nothing) and closes the device. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.admin.idle();
    await this.settler.idle();
    // After a failed device flush nothing more is written: the next open replays what was durable.
    if (!this.readOnly && !this.store.fence) {
      await this.store.commit();
      // Everything is durable in the journal now; a checkpoint that cannot write home (a full host)
      // only leaves the next open a replay to do.
      await this.store.checkpoint().catch((err: unknown) => {
        if (this.store.fence) throw err;
      });
    }
    this.closed = true;
    await this.dev.close();
  }
}

function checkSize(size: number): number {
  if (!Number.isSafeInteger(size) || size <= 0) throw new PoolError('EINVAL', `invalid volume size ${size}`);
  if (size > MAX_VOLUME_SIZE) throw new PoolError('EINVAL', `volume size ${size} is over the maximum of 64T`);
  return Math.ceil(size / 512) * 512;
}
