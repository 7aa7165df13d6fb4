import type { BlockDevice } from '../blockdev/index.js';
import type { ExportListing, ExportSource, OpenedExport } from '../nbd/exports.js';
import type { Pool } from '../qcowlike/index.js';
import { chainCatalog, type FrozenCatalog, type FrozenEntry } from './frozen-exports.js';
import { formatSize } from './size.js';

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
  constructor(
    private readonly pools: readonly ServedPool[],
    private readonly opts: PoolExportOptions,
  ) {}

  /** The export name of a volume (what clients type and what the server counts connections by). */
  exportName(pool: string, volume: string): string {
    return this.pools.length > 1 ? `${pool}/${volume}` : volume;
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
        out.set(name, { identity: 'volume', readOnly, description: this.opts.describe(p.name, v.name, v.size), open: () => p.pool.openVolume(v.name, { readOnly }) });
      }
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
    const table = this.table();
    if (table.has(name)) return name;
    if (name === '') return table.keys().next().value;
    // POOL/VOL answers when one pool is served and its exports go by VOL.
    const slash = name.indexOf('/');
    if (this.pools.length === 1 && slash > 0 && name.slice(0, slash) === this.pools[0]!.name && table.has(name.slice(slash + 1))) return name.slice(slash + 1);
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
