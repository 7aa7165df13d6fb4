import type { TemplateSettings, VolumeInfo } from '../qcowlike/index.js';
import { checkSettings, type ChainNode, type SnapshotInfo, type SnapshotRef, type TemplateInfo } from '../snapshot/index.js';
import { requestFlag } from './request-fields.js';

/** The snapshot, clone, template and flatten requests, as the CLI and a served pool's control socket pass them (run by src/host/chain-admin.ts). */
export type CloneSource = SnapshotRef | { template: string };

export type ChainRequest =
  | { op: 'snapshot-create'; refs: SnapshotRef[]; full: boolean }
  | { op: 'snapshot-list'; volume: string }
  | { op: 'snapshot-delete'; volume: string; snapshot: string; rate?: number; force?: boolean }
  | { op: 'snapshot-revert'; volume: string; snapshot: string; force: boolean }
  | { op: 'clone'; source: CloneSource; name: string; full: boolean }
  /** `settings`: the VM an imported package described, kept with the template. */
  | { op: 'template-create'; volume: string; settings?: TemplateSettings }
  /** `source` is a volume (its state now) or a template: the pool tells which. */
  | { op: 'template-clone'; source: string; name: string }
  | { op: 'template-info'; template: string }
  | { op: 'template-delete'; template: string; force?: boolean }
  | { op: 'template-list' }
  | { op: 'volume-flatten'; volume: string; rate?: number };

export interface ChainResults {
  'snapshot-create': SnapshotInfo[];
  'snapshot-list': { volume: string; tree: ChainNode };
  'snapshot-delete': { deleted: string; freedBytes: number };
  'snapshot-revert': { reverted: string; to: string; disconnected: number };
  clone: VolumeInfo & { origin: string; full: boolean; warnings: string[] };
  'template-create': TemplateInfo;
  'template-clone': TemplateInfo;
  'template-info': TemplateInfo;
  'template-delete': { deleted: string };
  'template-list': TemplateInfo[];
  'volume-flatten': VolumeInfo;
}

export const CHAIN_OPS: ReadonlySet<string> = new Set(['snapshot-create', 'snapshot-list', 'snapshot-delete', 'snapshot-revert', 'clone', 'template-create', 'template-clone', 'template-info', 'template-delete', 'template-list', 'volume-flatten']);

/** The verbs that only read (allowed on a pool served read-only). */
export const CHAIN_READS: ReadonlySet<string> = new Set(['snapshot-list', 'template-info', 'template-list']);

/**
 * Verbs that may run for hours (a rate-limited merge or copy): a server runs
 * them beside the other verbs rather than ahead of them in one queue, so a
 * flatten does not hold up `volume list`; the pool serializes its own
 * catalog changes.
 */
export function chainRunsLong(req: { op: string; full?: unknown }): boolean {
  return req.op === 'snapshot-delete' || req.op === 'volume-flatten' || ((req.op === 'clone' || req.op === 'snapshot-create') && req.full === true);
}

export function isChainRequest(req: { op: string }): req is ChainRequest {
  return CHAIN_OPS.has(req.op);
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks a chain request that came over the control socket, field by field; the error names what is wrong. */
export function parseChainRequest(raw: Record<string, unknown>): ChainRequest {
  const name = (key: string, v: unknown = raw[key]): string => {
    if (typeof v !== 'string' || !NAME.test(v)) throw new Error(`'${String(raw.op)}' needs '${key}' (a name)`);
    return v;
  };
  const rate = (): { rate?: number } => {
    const v = raw.rate;
    if (v === undefined) return {};
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new Error("'rate' must be a whole number of bytes per second above 0");
    return { rate: v };
  };
  const ref = (v: unknown): SnapshotRef => {
    if (typeof v !== 'object' || v === null) throw new Error(`'${String(raw.op)}' needs snapshot references ({ volume, snapshot })`);
    const r = v as Record<string, unknown>;
    return { volume: name('volume', r.volume), snapshot: name('snapshot', r.snapshot) };
  };
  const flag = (key: string): boolean => requestFlag(raw, key);
  switch (raw.op) {
    case 'snapshot-create': {
      if (!Array.isArray(raw.refs) || raw.refs.length === 0 || raw.refs.length > 1024) throw new Error("'snapshot-create' needs 'refs' (1 to 1024 snapshot references)");
      return { op: 'snapshot-create', refs: raw.refs.map(ref), full: flag('full') };
    }
    case 'snapshot-list':
      return { op: 'snapshot-list', volume: name('volume') };
    case 'snapshot-delete':
      return { op: 'snapshot-delete', ...ref(raw), ...rate(), force: flag('force') };
    case 'snapshot-revert':
      return { op: 'snapshot-revert', ...ref(raw), force: flag('force') };
    case 'clone': {
      const s = raw.source;
      if (typeof s !== 'object' || s === null) throw new Error("'clone' needs 'source' ({ volume, snapshot } or { template })");
      const source: CloneSource = 'template' in s ? { template: name('template', (s as Record<string, unknown>).template) } : ref(s);
      return { op: 'clone', source, name: name('name'), full: flag('full') };
    }
    case 'template-create':
      return { op: 'template-create', volume: name('volume'), ...(raw.settings === undefined ? {} : { settings: checkSettings(raw.settings, "'settings'") }) };
    case 'template-clone':
      return { op: 'template-clone', source: name('source'), name: name('name') };
    case 'template-info':
      return { op: raw.op, template: name('template') };
    case 'template-delete':
      return { op: raw.op, template: name('template'), force: flag('force') };
    case 'template-list':
      return { op: 'template-list' };
    case 'volume-flatten':
      return { op: 'volume-flatten', volume: name('volume'), ...rate() };
    default:
      throw new Error(`unknown request '${String(raw.op)}'`);
  }
}
