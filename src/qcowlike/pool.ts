import type { BlockDevice } from '../blockdev/index.js';
import { Allocator } from './allocator.js';
import { decodeCatalog, emptyCatalog, encodeCatalog, readPointer, writePointer, POINTER_BYTES, type Catalog, type CatalogLayer } from './catalog.js';
import { dataChecksum, initChecksums, metaChecksum } from './checksum.js';
import type { PoolCore } from './core.js';
import { PoolError } from './errors.js';
import { ENTRY_ALLOC, ENTRY_SUMS, geometryFor, l1BlocksFor, readHost, type Geometry } from './geometry.js';
import { HEADER_BYTES, ROOT_CLUSTER, decodeHeader, encodeHeader, planLayout, type PoolHeader } from './header.js';
import { Layer } from './layer.js';
import { BlockType } from './metablock.js';
import { MetaStore } from './metastore.js';
import type { CheckReport, LayerInfo, PoolCreateOptions, PoolOpenOptions, PoolStats, Preallocation, Volume, VolumeInfo } from './types.js';
import { VolumeHandle } from './volume.js';
import { checkPool } from './check.js';

const DEFAULT_CLUSTER = 64 * 1024;
const DEFAULT_CACHE = 64 * 1024 * 1024;
/** Volumes up to 64 TiB; the format itself addresses 2^48 clusters. */
export const MAX_VOLUME_SIZE = 64 * 2 ** 40;
/** At most this much virtual space under in-place-write intents: the most a recovery re-reads. */
const MAX_INTENT_SPAN = 4 * 2 ** 30;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

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
  private catalog: Catalog = emptyCatalog();
  private readonly layers = new Map<number, Layer>();
  private readonly openCounts = new Map<string, number>();
  private admin: Promise<void> = Promise.resolve();
  private closed = false;
  /** Journal transactions replayed when the pool was opened (non-zero after an unclean stop). */
  replayed = 0;

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
  }

  static async create(dev: BlockDevice, opts: PoolCreateOptions = {}): Promise<Pool> {
    await initChecksums();
    if (dev.readOnly) throw new PoolError('EROFS', `${dev.name}: cannot create a pool on a read-only device`);
    const header = planLayout(dev.size, opts.clusterSize ?? DEFAULT_CLUSTER, opts);
    const pool = new Pool(dev, header, opts.cacheBytes ?? DEFAULT_CACHE, false, opts.maxIntents);
    await dev.write(encodeHeader(header), 0);
    await pool.store.journal.reset(1n);
    pool.alloc.format();
    pool.store.create(ROOT_CLUSTER, BlockType.Root, 0, true);
    await pool.writeCatalog();
    await pool.store.checkpoint();
    return pool;
  }

  static async open(dev: BlockDevice, opts: PoolOpenOptions = {}): Promise<Pool> {
    await initChecksums();
    if (dev.size < HEADER_BYTES) throw new PoolError('EFORMAT', `${dev.name} is not a Strata pool (only ${dev.size} bytes)`);
    const raw = Buffer.alloc(HEADER_BYTES);
    await dev.read(raw, 0);
    const header = decodeHeader(raw, dev.name, dev.size);
    const readOnly = opts.readOnly ?? dev.readOnly;
    const pool = new Pool(dev, header, opts.cacheBytes ?? DEFAULT_CACHE, readOnly, opts.maxIntents);
    if (readOnly) {
      const pending = await pool.store.journal.read();
      if (pending.length > 0) throw new PoolError('EBUSY', `${dev.name}: pool was not closed cleanly and needs its journal replayed; open it read-write once`);
    } else {
      pool.replayed = await pool.store.recover((l2) => pool.adoptTable(l2));
    }
    await pool.alloc.load();
    const root = await pool.store.load(ROOT_CLUSTER, BlockType.Root, 0, true);
    const ptr = readPointer(root);
    const bytes = Buffer.alloc(ptr.bytes);
    await dev.read(bytes, ptr.start * header.clusterSize);
    pool.catalog = decodeCatalog(bytes, ptr, `${dev.name}: catalog at offset ${ptr.start * header.clusterSize}`);
    pool.alloc.catalogReserve = ptr.clusters + 1;
    pool.buildLayers();
    // A delete cut short goes on in the background; a failure leaves it for the next open.
    if (!readOnly) pool.serialize(() => pool.reclaimInterrupted()).catch(() => undefined);
    return pool;
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
    const start = this.alloc.allocateRun(clusters, { catalog: true });
    this.alloc.catalogReserve = clusters + 1;
    const padded = Buffer.alloc(clusters * C);
    bytes.copy(padded);
    const root = this.store.peek(ROOT_CLUSTER)!;
    const old = readPointer(root);
    writePointer(root, { start, clusters, bytes: bytes.length, hash: metaChecksum(bytes) });
    this.store.markDirty(ROOT_CLUSTER, 0, POINTER_BYTES);
    // Catalog clusters are written directly, never through the journal: free after the commit.
    if (old.start !== 0) for (let c = old.start; c < old.start + old.clusters; c++) this.alloc.free(c);
    return this.dev.write(padded, start * C);
  }

  /**
   * Changes the catalog together with the metadata that goes with it, as one
   * step that no commit can split (a volume being written commits whenever its
   * client flushes): `change` runs synchronously under the write gate, and the
   * new catalog reaches the device before the gate opens again, so a commit
   * captures all of it or none. `change` returns false when a block it needs
   * is not in memory; then `prepare` loads and it runs again. Commits.
   */
  private async changeCatalog(change: () => boolean | void, prepare?: () => Promise<void>): Promise<void> {
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
    await this.store.commit();
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.admin.then(fn);
    this.admin = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private volumeRec(name: string): Catalog['volumes'][number] {
    const v = this.catalog.volumes.find((x) => x.name === name);
    if (!v) throw new PoolError('ENOENT', `volume '${name}' not found in pool ${this.dev.name}`);
    return v;
  }

  private checkAdmin(): void {
    if (this.closed) throw new PoolError('EINVAL', `pool ${this.dev.name} is closed`);
    if (this.readOnly) throw new PoolError('EROFS', `pool ${this.dev.name} is open read-only`);
  }

  // ---- volumes ---------------------------------------------------------------

  async createVolume(name: string, size: number, opts: { preallocation?: Preallocation } = {}): Promise<VolumeInfo> {
    return this.serialize(async () => {
      this.checkAdmin();
      if (!NAME.test(name)) throw new PoolError('EINVAL', `invalid volume name '${name}' (letters, digits, '.', '_', '-'; up to 64; no '/' or '@')`);
      if (this.catalog.volumes.some((v) => v.name === name)) throw new PoolError('EEXIST', `volume '${name}' already exists`);
      size = checkSize(size);
      await this.changeCatalog(() => {
        const l1Blocks = l1BlocksFor(this.geo, size);
        const l1Start = this.alloc.allocateRun(l1Blocks);
        const id = this.catalog.nextLayerId++;
        for (let i = 0; i < l1Blocks; i++) this.store.create(l1Start + i, BlockType.L1, id);
        const now = new Date().toISOString();
        const rec: CatalogLayer = { id, parent: null, size, l1Start, l1Blocks, frozen: false, created: now };
        this.catalog.layers.push(rec);
        this.catalog.volumes.push({ name, layer: id, size, created: now, readOnly: false });
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
      const layer = this.layers.get(v.layer)!;
      await this.changeCatalog(() => {
        this.catalog.volumes = this.catalog.volumes.filter((x) => x !== v);
        layer.rec.reclaiming = true;
      });
      await this.reclaimLayer(layer);
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
          for (let i = 0; i < P; i++) {
            const host = readHost(ref.l2, i * E);
            if (host !== 0) this.alloc.free(host, { punch: true });
          }
          layer.clearTable(firstVc);
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

  /** Finishes the reclaiming that a crash or a failure interrupted. */
  private async reclaimInterrupted(): Promise<void> {
    for (const layer of [...this.layers.values()]) if (layer.rec.reclaiming) await this.reclaimLayer(layer);
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
          throw new PoolError('EINVAL', `shrinking '${name}' to ${size} bytes would discard ${kept} allocated bytes beyond that point (use --force)`);
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
    let bytes = 0;
    const vol = this.handle('(scan)', layer, true);
    for (const e of await vol.blockStatus(size, layer.size - size)) if (!e.hole) bytes += e.length;
    await vol.close();
    return bytes;
  }

  async openVolume(name: string, opts: { readOnly?: boolean } = {}): Promise<Volume> {
    if (this.closed) throw new PoolError('EINVAL', `pool ${this.dev.name} is closed`);
    const v = this.volumeRec(name);
    return this.handle(name, this.layers.get(v.layer)!, (opts.readOnly ?? false) || v.readOnly || this.readOnly);
  }

  private handle(name: string, layer: Layer, readOnly: boolean): VolumeHandle {
    this.openCounts.set(name, (this.openCounts.get(name) ?? 0) + 1);
    return new VolumeHandle(this, layer, name, readOnly, () => this.openCounts.set(name, (this.openCounts.get(name) ?? 1) - 1));
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
    };
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
    return { name, size: v.size, allocatedBytes: layers[0]!.allocatedBytes, created: v.created, readOnly: v.readOnly, layers };
  }

  /** Bytes of data a layer holds itself: its allocated sub-clusters. Reads every L2 table of the layer. */
  private async layerAllocated(layer: Layer): Promise<number> {
    const { entriesPerL2: P, entrySize: E, subclusterSize: S } = this.geo;
    let subclusters = 0;
    for await (const [, l2c] of layer.tables()) {
      const l2 = this.store.peek(l2c) ?? (await this.store.load(l2c, BlockType.L2, layer.id));
      for (let i = 0; i < P; i++) subclusters += popcount(l2.readUInt32LE(i * E + ENTRY_ALLOC));
    }
    return subclusters * S;
  }

  /** Walks every structure; see check.ts. */
  async check(opts: { repair?: boolean } = {}): Promise<CheckReport> {
    if (opts.repair && this.readOnly) throw new PoolError('EROFS', `pool ${this.dev.name} is open read-only: check --repair needs to write`);
    return this.serialize(async () => {
      // A read-only open found the journal empty (or refused to open): the metadata is settled already.
      if (!this.readOnly) await this.store.checkpoint();
      const volumeOf = (id: number): string | undefined => this.catalog.volumes.find((v) => v.layer === id)?.name;
      const report = await checkPool(this, [...this.layers.values()], this.catalogClusters(), opts.repair ?? false, volumeOf);
      if (report.repaired > 0) await this.store.checkpoint();
      return report;
    });
  }

  private catalogClusters(): { start: number; clusters: number } {
    const p = readPointer(this.store.peek(ROOT_CLUSTER)!);
    return { start: p.start, clusters: p.clusters };
  }

  async flush(): Promise<void> {
    await this.store.commit();
  }

  /** Checkpoints (so the next open replays nothing) and closes the device. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.admin;
    if (!this.readOnly) await this.store.checkpoint();
    this.closed = true;
    await this.dev.close();
  }
}

function checkSize(size: number): number {
  if (!Number.isSafeInteger(size) || size <= 0) throw new PoolError('EINVAL', `invalid volume size ${size}`);
  if (size > MAX_VOLUME_SIZE) throw new PoolError('EINVAL', `volume size ${size} is over the maximum of 64T`);
  return Math.ceil(size / 512) * 512;
}

function popcount(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}
