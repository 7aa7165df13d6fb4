import type { Pool, Volume } from '../qcowlike/index.js';
import { frozenRecords, openFrozen } from '../snapshot/index.js';

/** A snapshot or a template as the export table sees it: a read-only disk with a name and a size. */
export type FrozenEntry = { kind: 'snapshot'; volume: string; snapshot: string; uuid: string; size: number } | { kind: 'template'; template: string; uuid: string; size: number };

/** Where the export table finds a pool's snapshots and templates, and opens one. */
export interface FrozenCatalog {
  list(pool: Pool): FrozenEntry[];
  open(pool: Pool, entry: FrozenEntry): Promise<Volume>;
}

/** The chain operations' catalog. */
export const chainCatalog: FrozenCatalog = {
  list(pool) {
    const records = frozenRecords(pool);
    return [
      ...records.snapshots.map((s): FrozenEntry => ({ kind: 'snapshot', volume: s.volume, snapshot: s.name, uuid: s.uuid, size: s.size })),
      ...records.templates.map((t): FrozenEntry => ({ kind: 'template', template: t.name, uuid: t.uuid, size: t.size })),
    ];
  },
  open(pool, entry) {
    return openFrozen(pool, entry.kind === 'snapshot' ? { volume: entry.volume, snapshot: entry.snapshot } : { template: entry.template });
  },
};
