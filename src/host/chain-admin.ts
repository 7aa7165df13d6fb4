/**
 * The snapshot, clone, template and flatten verbs on one pool, each written
 * once on top of src/snapshot and dispatched from runAdmin, so the CLI runs
 * them in-process and a server runs them on its open pool the same way.
 * Merges and copies (snapshot delete, flatten, full snapshots and clones)
 * run as jobs of the pool: progress, a rate limit, cancel.
 */
import { PoolError, type Pool, type VolumeInfo } from '../qcowlike/index.js';
import {
  chainTree,
  cloneVolume,
  convertToTemplate,
  createSnapshots,
  deleteSnapshot,
  deleteTemplate,
  flattenVolume,
  listSnapshots,
  listTemplates,
  openFrozen,
  revertSnapshot,
  templateFrom,
  templateInfo,
  type ChainJobOptions,
  type ChainNode,
  type SnapshotInfo,
  type SnapshotRef,
} from '../snapshot/index.js';
import { AdminError, type AdminContext } from './admin.js';
import type { JobSpec } from './jobs.js';
import { oneLine } from './pool-errors.js';
import type { ChainRequest, ChainResults, CloneSource } from './chain-requests.js';
import { overcommitWarnings } from './pool-health.js';
import { copyVolumeInto } from './volume-copy.js';
import { releaseFrozenExport } from './export-clients.js';

/** What the library does with a merge cut short (a cancel, a crash): the pool finishes it. */
const MERGE_RESUMES = 'resumes at the next read-write open of the pool';

/** What a pool call was about, so that a missing or taken name is reported the way the user typed it. */
interface Subject {
  volume?: string;
  snapshot?: SnapshotRef;
  template?: string;
  /** A new name the call takes. */
  created?: string;
}

function sourceSubject(source: CloneSource): Subject {
  return 'template' in source ? { template: source.template } : { snapshot: source };
}

export async function runChain(pool: Pool, req: ChainRequest, ctx: AdminContext): Promise<ChainResults[ChainRequest['op']]> {
  const p = ctx.poolName;
  const about = <T>(subject: Subject, fn: () => Promise<T>): Promise<T> => aboutChain(pool, p, subject, fn);
  const job = <T>(spec: JobSpec, work: (opts: ChainJobOptions) => Promise<T>): Promise<T> => asJob(ctx, spec, work);
  switch (req.op) {
    case 'snapshot-create': {
      checkGroup(pool, p, req.refs, req.full);
      let made: SnapshotInfo[];
      try {
        made = await createSnapshots(pool, req.refs);
      } catch (err) {
        throw await groupError(pool, p, req.refs, err);
      }
      ctx.changed?.();
      if (req.full) {
        const ref = req.refs[0]!;
        // The snapshot keeps the blocks; the volume gets its own copy of every one it reads, and so shares nothing with the snapshot.
        try {
          await job({ kind: 'flatten', target: `${p}/${ref.volume}`, restart: `strata volume flatten ${p}/${ref.volume}` }, (opts) => about({ volume: ref.volume }, () => flattenVolume(pool, ref.volume, opts)));
        } catch (err) {
          throw new AdminError(err instanceof AdminError ? err.code : 'EINVAL', `snapshot '${p}/${ref.volume}@${ref.snapshot}' was taken, but the copy that makes it full stopped (${oneLine(err)}); strata volume flatten ${p}/${ref.volume} finishes it`);
        } finally {
          ctx.changed?.();
        }
      }
      return made;
    }
    case 'snapshot-list':
      requireVolume(pool, p, req.volume);
      return { volume: req.volume, tree: await about({ volume: req.volume }, () => chainTree(pool, req.volume)) };
    case 'snapshot-delete': {
      const ref = { volume: req.volume, snapshot: req.snapshot };
      const name = `${p}/${req.volume}@${req.snapshot}`;
      requireVolume(pool, p, req.volume);
      // A mistyped name is refused here, before it becomes a failed job.
      await about({ snapshot: ref }, () => requireSnapshot(pool, ref, true));
      // Clients reading the snapshot's export: refused, or (forced) their connections ended first.
      await releaseFrozenExport(ctx, `${req.volume}@${req.snapshot}`, 'snapshot', req.force === true);
      const spec: JobSpec = { kind: 'snapshot-delete', target: name, resumes: MERGE_RESUMES, ...(req.rate !== undefined ? { rate: req.rate } : {}) };
      let freedBytes: number;
      try {
        ({ freedBytes } = await job(spec, (opts) => about({ snapshot: ref }, () => deleteSnapshot(pool, ref, { ...opts, ...(req.rate !== undefined ? { rateBytesPerSec: req.rate } : {}) }))));
      } catch (err) {
        // The name goes first, in one commit; a merge stopped after that is finished by the pool itself.
        const gone = await listSnapshots(pool, req.volume).then(
          (all) => !all.some((x) => x.name === req.snapshot),
          () => false,
        );
        if (gone) {
          ctx.changed?.();
          throw new AdminError('EINVAL', `snapshot '${name}' is deleted, but giving back its space stopped (${oneLine(err)}); it ${MERGE_RESUMES.replace('resumes', 'goes on')}`);
        }
        throw err;
      }
      ctx.changed?.();
      return { deleted: name, freedBytes };
    }
    case 'snapshot-revert': {
      const ref = { volume: req.volume, snapshot: req.snapshot };
      requireVolume(pool, p, req.volume);
      const clients = ctx.clientsOf?.(req.volume) ?? 0;
      if (clients > 0 && !req.force) throw new AdminError('EBUSY', `volume '${p}/${req.volume}' has ${clients} connected client${clients === 1 ? '' : 's'}; a revert changes the disk under ${clients === 1 ? 'it' : 'them'}: disconnect ${clients === 1 ? 'it' : 'them'} first, or force the revert to end ${clients === 1 ? 'its connection' : 'their connections'}`);
      // The snapshot is looked up first, so that a forced revert to a missing one ends nobody's connection.
      if (clients > 0) await about({ snapshot: ref }, () => requireSnapshot(pool, ref));
      // A guest whose disk changes beneath its cache would corrupt it: its connection ends, and it reconnects to the reverted disk.
      const disconnected = clients > 0 ? ((await ctx.disconnect?.(req.volume)) ?? 0) : 0;
      await about({ snapshot: ref }, () => revertSnapshot(pool, ref, { force: req.force }));
      ctx.changed?.();
      return { reverted: `${p}/${req.volume}`, to: `${p}/${req.volume}@${req.snapshot}`, disconnected };
    }
    case 'clone': {
      const origin = 'template' in req.source ? `${p}/${req.source.template}` : `${p}/${req.source.volume}@${req.source.snapshot}`;
      checkCloneSource(pool, p, req.source);
      const info = req.full ? await fullClone(pool, p, req.source, req.name, ctx, origin) : await about({ ...sourceSubject(req.source), created: req.name }, () => cloneVolume(pool, req.source, req.name));
      ctx.changed?.();
      return { ...info, origin, full: req.full, warnings: overcommitWarnings(pool, p) };
    }
    case 'template-create': {
      requireVolume(pool, p, req.volume);
      const clients = ctx.clientsOf?.(req.volume) ?? 0;
      if (clients > 0) throw new AdminError('EBUSY', `volume '${p}/${req.volume}' has ${clients} connected client${clients === 1 ? '' : 's'}; a template is read-only and no longer a volume: disconnect ${clients === 1 ? 'it' : 'them'} first`);
      const t = await about({ volume: req.volume }, () => convertToTemplate(pool, req.volume, req.settings));
      ctx.changed?.();
      return t;
    }
    case 'template-clone': {
      const source = volumeExists(pool, req.source) ? { volume: req.source } : { template: req.source };
      const t = await about({ ...source, created: req.name }, () => templateFrom(pool, source, req.name));
      ctx.changed?.();
      return t;
    }
    case 'template-info':
      return about({ template: req.template }, () => templateInfo(pool, req.template));
    case 'template-delete':
      await releaseFrozenExport(ctx, req.template, 'template', req.force === true);
      await about({ template: req.template }, () => deleteTemplate(pool, req.template));
      ctx.changed?.();
      return { deleted: `${p}/${req.template}` };
    case 'template-list':
      return listTemplates(pool);
    case 'volume-flatten': {
      requireVolume(pool, p, req.volume);
      const target = `${p}/${req.volume}`;
      const spec: JobSpec = { kind: 'flatten', target, restart: `strata volume flatten ${target}`, ...(req.rate !== undefined ? { rate: req.rate } : {}) };
      await job(spec, (opts) => about({ volume: req.volume }, () => flattenVolume(pool, req.volume, { ...opts, ...(req.rate !== undefined ? { rateBytesPerSec: req.rate } : {}) })));
      ctx.changed?.();
      return pool.volumeInfo(req.volume);
    }
  }
}

/** Runs chain work as a job of the pool when the pool has a job list (always, from the CLI and a server); the work sees progress and cancel as ChainJobOptions. */
async function asJob<T>(ctx: AdminContext, spec: JobSpec, work: (opts: ChainJobOptions) => Promise<T>): Promise<T> {
  if (!ctx.jobs) return work(ctx.signal ? { signal: ctx.signal } : {});
  return ctx.jobs.run({ ...spec, ...(ctx.signal ? { signal: ctx.signal } : {}) }, (ctl) => work({ signal: ctl.signal, onProgress: (p) => ctl.progress(p.done, p.total) }).catch((err: unknown) => Promise.reject(cancelled(ctl.signal, err))));
}

/** Work stopped by its signal (a timer's AbortError, say) reports why it was stopped: `job 7 was cancelled`, a server stopping, Ctrl-C. */
function cancelled(signal: AbortSignal, err: unknown): unknown {
  return signal.aborted && signal.reason instanceof Error ? signal.reason : err;
}

/**
 * An independent copy of a snapshot or template: a new volume of its size,
 * marked incomplete until every block is copied in (so a crash midway never
 * leaves what looks like a good copy), removed again if the copy fails or is
 * cancelled.
 */
async function fullClone(pool: Pool, p: string, source: CloneSource, name: string, ctx: AdminContext, origin: string): Promise<VolumeInfo> {
  const spec: JobSpec = { kind: 'clone', target: `${p}/${name} from ${origin}`, restart: `strata clone ${origin} ${p}/${name} --full (after deleting what is left of ${p}/${name})` };
  return asJob(ctx, spec, async (opts) => {
    const src = await aboutChain(pool, p, sourceSubject(source), () => openFrozen(pool, source));
    try {
      await aboutChain(pool, p, { created: name }, () => pool.createVolume(name, src.size, { incomplete: true }));
      const dst = await pool.openVolume(name);
      try {
        await copyVolumeInto(src, dst, (done, total) => opts.onProgress?.({ done, total }), opts.signal);
        await pool.completeVolume(name);
        await dst.close();
      } catch (err) {
        await dst.close().catch(() => undefined);
        await pool.deleteVolume(name).catch(() => undefined);
        throw err;
      }
    } finally {
      await src.close();
    }
    return pool.volumeInfo(name);
  });
}

function volumeExists(pool: Pool, volume: string): boolean {
  return pool.volumeRecords().some((v) => v.name === volume);
}

function requireVolume(pool: Pool, p: string, volume: string): void {
  if (!volumeExists(pool, volume)) throw new AdminError('ENOENT', `volume '${volume}' not found in pool '${p}'`);
}

/** The snapshot exists; for a delete, nothing is cloned from it (refused here rather than as a failed job). */
async function requireSnapshot(pool: Pool, ref: SnapshotRef, deleting = false): Promise<void> {
  const all = await listSnapshots(pool, ref.volume);
  const s = all.find((x) => x.name === ref.snapshot);
  if (!s) throw new PoolError('ENOENT', `no snapshot ${ref.volume}@${ref.snapshot}`);
  if (deleting && s.dependants.length > 0) throw new PoolError('EBUSY', `snapshot '${ref.volume}@${ref.snapshot}' has dependent clones: ${s.dependants.join(', ')} (delete or flatten them first)`);
}

/** A group is one atomic step in one pool: each volume once, each there; a full copy is of one volume. */
function checkGroup(pool: Pool, p: string, refs: SnapshotRef[], full: boolean): void {
  if (refs.length === 0) throw new AdminError('EINVAL', 'snapshot create needs at least one POOL/VOL@SNAP');
  if (full && refs.length > 1) throw new AdminError('EINVAL', 'a full snapshot is of one volume: give one POOL/VOL@SNAP with --full');
  const seen = new Set<string>();
  for (const r of refs) {
    if (seen.has(r.volume)) throw new AdminError('EINVAL', `volume '${p}/${r.volume}' is named twice: a group snapshot takes one snapshot of each volume`);
    seen.add(r.volume);
    requireVolume(pool, p, r.volume);
  }
}

/** Names the snapshot of a group that already exists, when that is why the group failed. */
async function groupError(pool: Pool, p: string, refs: SnapshotRef[], err: unknown): Promise<unknown> {
  if (!(err instanceof PoolError) || err.code !== 'EEXIST') return translate(err);
  for (const r of refs) {
    const taken = await listSnapshots(pool, r.volume).then(
      (all) => all.some((s) => s.name === r.snapshot),
      () => false,
    );
    if (taken) return new AdminError('EEXIST', `snapshot '${p}/${r.volume}@${r.snapshot}' already exists${refs.length > 1 ? ' (no snapshot of the group was taken)' : ''}`);
  }
  return translate(err);
}

function checkCloneSource(pool: Pool, p: string, source: CloneSource): void {
  if ('template' in source && volumeExists(pool, source.template)) {
    throw new AdminError('EINVAL', `'${p}/${source.template}' is a volume, not a template: clone one of its snapshots (${p}/${source.template}@SNAP), or make a template of it first`);
  }
  if ('volume' in source) requireVolume(pool, p, source.volume);
}

/**
 * Runs a library call and says what is missing or taken the way the user
 * named it; the library's own refusals (EBUSY with the dependants it lists,
 * EINVAL) pass through as one line.
 */
async function aboutChain<T>(pool: Pool, p: string, subject: Subject, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof PoolError && err.code === 'ENOENT') throw missing(pool, p, subject) ?? translate(err);
    if (err instanceof PoolError && err.code === 'EEXIST') {
      if (subject.created !== undefined) throw new AdminError('EEXIST', `'${p}/${subject.created}' already exists (a volume or template of that name)`);
      if (subject.snapshot) throw new AdminError('EEXIST', `snapshot '${p}/${subject.snapshot.volume}@${subject.snapshot.snapshot}' already exists`);
    }
    throw translate(err);
  }
}

/** Which of the names a call was about is missing, looked up from the catalog the volumes are in. */
function missing(pool: Pool, p: string, subject: Subject): AdminError | undefined {
  const volume = subject.snapshot?.volume ?? subject.volume;
  if (volume !== undefined && !volumeExists(pool, volume)) return new AdminError('ENOENT', `volume '${volume}' not found in pool '${p}'`);
  if (subject.snapshot) return new AdminError('ENOENT', `snapshot '${subject.snapshot.volume}@${subject.snapshot.snapshot}' not found in pool '${p}'`);
  if (subject.template !== undefined) return new AdminError('ENOENT', `template '${subject.template}' not found in pool '${p}'`);
  return undefined;
}

/** The library's refusals become one-line admin errors with their code. */
function translate(err: unknown): unknown {
  if (err instanceof PoolError && (err.code === 'EBUSY' || err.code === 'EINVAL' || err.code === 'ENOENT' || err.code === 'EEXIST')) return new AdminError(err.code, oneLine(err));
  return err;
}


/** What `volume info` shows of a volume's chain: its layers by name, top first, and what it was cloned from. */
export interface ChainSummary {
  /** `vol`, then what it reads through: `vol@snap`, `other@snap`, `tmpl`, `(deleted)`. */
  chain: string[];
  /** The snapshot or template a linked clone was made from (`vol@snap`, `tmpl`), or null. */
  origin: string | null;
}

/** A volume of one layer has no chain, and the tree is not walked for it. */
export async function chainSummary(pool: Pool, info: VolumeInfo): Promise<ChainSummary> {
  if (info.layers.length <= 1) return { chain: [info.name], origin: null };
  const path = pathTo(await chainTree(pool, info.name), info.name);
  if (!path) return { chain: [info.name], origin: null };
  const up = path.reverse();
  const origin = up.slice(1).find((n) => n.kind !== 'base' && !(n.kind === 'snapshot' && n.name.startsWith(`${info.name}@`)));
  return { chain: up.map((n) => n.name), origin: origin?.name ?? null };
}

/** The nodes from the root down to the volume named `volume`, or undefined. */
function pathTo(node: ChainNode, volume: string): ChainNode[] | undefined {
  if (node.kind === 'volume' && node.name === volume) return [node];
  for (const c of node.children) {
    const below = pathTo(c, volume);
    if (below) return [node, ...below];
  }
  return undefined;
}
