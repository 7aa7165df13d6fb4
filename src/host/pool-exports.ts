import type { BlockDevice } from '../blockdev/index.js';
import type { ExportListing, ExportSource, OpenedExport } from '../nbd/exports.js';
import type { Pool } from '../qcowlike/index.js';
import { chainCatalog, type FrozenCatalog, type FrozenEntry } from './frozen-exports.js';
import { formatSize } from './size.js';
import { MovableDevice } from '../migrate/movable-device.js';

export interface ServedPool {
  name: string;
  pool: Pool;
}

export interface PoolExportOptions {
  readOnly: boolean;
  /** Serve volumes an import left incomplete too. */
  allowIncomplete: boolean;
  /** Serve only these export names (`--export`); every volume, present and future, when undefined. */
  only?: ReadonlySet<string>;
  describe(pool: string, volume: string, size: number): string;
  /** Where snapshots and templates come from (the chain operations unless a test gives its own). */
  frozen?: FrozenCatalog;
}

interface Entry {
  /** Tells apart what a name stood for at different times (see ExportSource.identity). */
  identity: string;
  readOnly: boolean;
  description: string;
  open(): Promise<BlockDevice>;
}

/**
 * The volumes of served pools as NBD exports, read from the catalogs each
 * time a client lists or names one: a volume created while the pool is
 * served is exported at once, a deleted one is gone, a resized one shows its
 * new size to new connections. Names are `VOL` when one pool is served and
 * `POOL/VOL` when several are; `POOL/VOL` always answers too. Every
 * snapshot is exported read-only as `VOL@SNAP` and every template as `TMPL`
 * (with the `POOL/` prefix under the same rule), appearing and going as
 * they are made and deleted.
 */
export class PoolExportSource implements ExportSource {
  private readonly pools: ServedPool[];
  /** The pool whose volumes go by bare names: the one pool the server was started with. */
  private readonly barePool: string | undefined;
  /** Export names that stand for a volume now in another pool (a hot migration's source name), by old name. */
  private readonly moved = new Map<string, { pool: string; volume: string }>();
  /** Targets of hot migrations not yet pivoted, by the export name they will take over; hidden while they fill. */
  private readonly filling = new Map<string, { pool: string; volume: string }>();

  constructor(
    pools: readonly ServedPool[],
    private readonly opts: PoolExportOptions,
  ) {
    this.pools = [...pools];
    this.barePool = pools.length === 1 ? pools[0]!.name : undefined;
  }

  /**
   * The export name of a volume (what clients type and what the server
   * counts connections by). A pool taken on later (the target of a
   * migration) never changes the names the first ones go by.
   */
  exportName(pool: string, volume: string): string {
    return pool === this.barePool ? volume : `${pool}/${volume}`;
  }

  /** Serves a pool opened after the server started (a migration's target); its names are always `POOL/VOL`. */
  addPool(p: ServedPool): void {
    if (!this.pools.some((x) => x.name === p.name)) this.pools.push(p);
  }

  /**
   * For a hot migration: `oldName` stands for the volume in its new pool
   * once `active` (after the pivot), so clients that reconnect find it where
   * they left it, and the new name is the same export (one opening, shared);
   * before that, the new name is hidden while it is being filled, and
   * `oldName` goes on standing for what it stood for (the source, which an
   * earlier move may have put in another pool already). `undefined` takes a
   * move that has not pivoted away (a migration rolled back).
   */
  alias(oldName: string, to: { pool: string; volume: string; active: boolean } | undefined): void {
    if (!to) {
      this.filling.delete(oldName);
      return;
    }
    const at = { pool: to.pool, volume: to.volume };
    if (to.active) {
      this.filling.delete(oldName);
      this.moved.set(oldName, at);
    } else this.filling.set(oldName, at);
  }

  /** Volumes not served because an import left them incomplete (and --allow-incomplete was not given). */
  held(): Array<{ pool: string; volume: string; name: string }> {
    const out: Array<{ pool: string; volume: string; name: string }> = [];
    for (const p of this.pools) for (const v of p.pool.volumeRecords()) if (v.incomplete && !this.opts.allowIncomplete) out.push({ pool: p.name, volume: v.name, name: this.exportName(p.name, v.name) });
    return out;
  }

  /** Every servable volume by export name; `--export` narrows it to those named, in their order. */
  private table(all = false): Map<string, Entry> {
    const out = new Map<string, Entry>();
    for (const p of this.pools) {
      for (const v of p.pool.volumeRecords()) {
        if (v.incomplete && !this.opts.allowIncomplete) continue;
        const name = this.exportName(p.name, v.name);
        const readOnly = this.opts.readOnly || v.readOnly;
        // Behind a movable device, so that a migration can mirror the volume and move it under its connections.
        out.set(name, { identity: 'volume', readOnly, description: this.opts.describe(p.name, v.name, v.size), open: async () => new MovableDevice(await p.pool.openVolume(v.name, { readOnly })) });
      }
    }
    // Hidden first: a target's own name may be the old name of the volume it is filled from (a move back to the first pool).
    for (const to of this.filling.values()) out.delete(this.exportName(to.pool, to.volume));
    for (const [oldName, to] of this.moved) {
      const newName = this.exportName(to.pool, to.volume);
      const e = out.get(newName);
      if (!e || newName === oldName) continue;
      // A volume made since under the old name has it back.
      if (out.has(oldName)) continue;
      out.delete(newName);
      out.set(oldName, e);
    }
    for (const p of this.pools) {
      for (const f of (this.opts.frozen ?? chainCatalog).list(p.pool)) {
        const name = this.frozenName(p.name, f);
        // One namespace per pool in the catalog; should a name still clash, the volume keeps it.
        if (out.has(name)) continue;
        out.set(name, { identity: `${f.kind} ${f.uuid}`, readOnly: true, description: describeFrozen(p.name, f), open: () => (this.opts.frozen ?? chainCatalog).open(p.pool, f) });
      }
    }
    if (all || !this.opts.only) return out;
    const picked = new Map<string, Entry>();
    for (const name of this.opts.only) {
      const e = out.get(name);
      if (e) picked.set(name, e);
    }
    return picked;
  }

  /** `VOL@SNAP` or `TMPL`, under the same pool prefix rule as volumes. */
  private frozenName(pool: string, f: FrozenEntry): string {
    return f.kind === 'snapshot' ? `${this.exportName(pool, f.volume)}@${f.snapshot}` : this.exportName(pool, f.template);
  }

  /** Every volume that could be served, whatever `--export` picked (for messages). */
  allNames(): string[] {
    return [...this.table(true).keys()];
  }

  async list(): Promise<ExportListing[]> {
    return [...this.table()].map(([name, e]) => ({ name, description: e.description }));
  }

  async resolve(name: string): Promise<string | undefined> {
    return this.canonical(this.table(), name);
  }

  /**
   * The export name a volume's clients reach it by, which connections are
   * counted under: its own, or the old name a hot migration moved it from.
   */
  servedName(pool: string, volume: string): string {
    const own = this.exportName(pool, volume);
    return this.canonical(this.table(), own) ?? own;
  }

  private canonical(table: Map<string, Entry>, name: string): string | undefined {
    if (table.has(name)) return name;
    if (name === '') return table.keys().next().value;
    // A moved volume's new name is the same export as its old one.
    for (const [oldName, to] of this.moved) if (name === this.exportName(to.pool, to.volume) && table.has(oldName)) return oldName;
    // POOL/VOL answers for the pool whose exports go by VOL.
    const slash = name.indexOf('/');
    if (slash > 0 && name.slice(0, slash) === this.barePool && table.has(name.slice(slash + 1))) return name.slice(slash + 1);
    return undefined;
  }

  async identity(canonical: string): Promise<string | undefined> {
    return this.table().get(canonical)?.identity;
  }

  async open(canonical: string): Promise<OpenedExport> {
    const e = this.table().get(canonical);
    if (!e) throw new Error(`no export named '${canonical}'`);
    const device = await e.open();
    return { device, readOnly: e.readOnly || device.readOnly, description: e.description, release: () => device.close() };
  }
}

function describeFrozen(pool: string, f: FrozenEntry): string {
  return f.kind === 'snapshot' ? `snapshot ${pool}/${f.volume}@${f.snapshot}, ${formatSize(f.size)}, read-only` : `template ${pool}/${f.template}, ${formatSize(f.size)}, read-only`;
}
