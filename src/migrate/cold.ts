import { AdminError } from '../host/admin.js';
import type { JobControl } from '../host/jobs.js';
import { openSide, type ChainSide } from './chain-side.js';
import { pipeChain } from './chain-pipe.js';
import { ReceiveNote } from './receive-note.js';
import type { ReceiveResult } from './receive.js';

export interface ColdMigrateResult {
  source: string;
  target: string;
  /** Snapshots the target holds now, oldest first. */
  snapshots: string[];
  origin: ReceiveResult['origin'];
  dataBytes: number;
  zeroBytes: number;
  streamBytes: number;
  /** SHA-256 over what the head (and the newest snapshot) reads, equal on both sides. */
  verified: { head: string; last: { snapshot: string; digest: string } | null };
  sourceKept: boolean;
}

/**
 * `strata migrate POOL/VOL POOL2[/NEW]`: moves a volume nobody uses, with
 * its snapshot chain, into another pool of this home. A temporary snapshot
 * freezes it; the send stream of its history goes through a pipe into a
 * receive on the target (every record checked against its checksum); then
 * the target's head and newest snapshot are read back and compared with the
 * source's, the target is flushed, and only then the source goes (volume and
 * snapshots in one commit) unless kept. A failure or a cancel anywhere
 * before that takes back the partial target and leaves the source as it was.
 */
export async function coldMigrate(home: string, src: { pool: string; volume: string }, dst: { pool: string; volume: string }, opts: { keepSource: boolean; rate?: number }, job: Pick<JobControl, 'signal' | 'progress'>): Promise<ColdMigrateResult> {
  const from = `${src.pool}/${src.volume}`;
  const to = `${dst.pool}/${dst.volume}`;
  if (src.pool === dst.pool) throw new AdminError('EINVAL', `${from} is in pool '${dst.pool}' already: migrate moves a volume to another pool`);
  const a = await openSide(home, src.pool, { write: true });
  let b: ChainSide | undefined;
  try {
    b = await openSide(home, dst.pool, { write: true });
    if (!(await a.exists(src.volume))) throw new AdminError('ENOENT', `volume '${src.volume}' not found in pool '${src.pool}'`);
    const clients = await a.clients(src.volume);
    if (clients > 0) throw new AdminError('EBUSY', `${from} is served and has ${clients} connected client${clients === 1 ? '' : 's'}: use --online to move it while it serves I/O`);
    const state = await a.state(src.volume);
    if (state.clones.length > 0 && !opts.keepSource) throw new AdminError('EBUSY', `${from} cannot leave pool '${src.pool}': ${state.clones.join(', ')} ${state.clones.length === 1 ? 'is a clone' : 'are clones'} of its snapshots there (migrate or flatten ${state.clones.length === 1 ? 'it' : 'them'} first, or copy with --keep-source)`);
    // A name taken, or a receive into it pending (kept for its resume token), is not this migration's to remove on failure.
    if (await b.exists(dst.volume)) throw new AdminError('EEXIST', `${to} exists: migrate to a new name (${dst.pool}/NEW)`);
    if (new ReceiveNote(home, dst.pool).get(dst.volume)) throw new AdminError('EBUSY', `a receive into ${to} was interrupted and is pending (strata receive ${to} --token prints the token that finishes it): migrate to another name (${dst.pool}/NEW)`);
    // A clone whose origin the target pool holds already (an earlier clone brought it) sends none of the origin's bytes.
    const omitBase = state.origin !== null && (await b.holdsOrigin(state.origin));
    const temp = await a.takeTemporary(src.volume);
    let received: ReceiveResult;
    let verified: ColdMigrateResult['verified'];
    try {
      const target = b;
      received = (await pipeChain((out) => a.send({ volume: src.volume, to: temp, from: null, omitBase }, out, { signal: job.signal, rate: opts.rate, onProgress: (done, total) => job.progress(done, total) }), (source) => target.receive(dst.volume, source, { signal: job.signal }))).received;
      verified = await verify(a, target, src.volume, dst.volume, temp, state.last);
      await target.flush(dst.volume);
    } catch (err) {
      await b.abandon(dst.volume).catch(() => undefined);
      await a.dropSnapshot(src.volume, temp).catch(() => undefined);
      throw err;
    }
    if (opts.keepSource) await a.dropSnapshot(src.volume, temp);
    else await a.removeChain(src.volume);
    const snapshots = received.snapshots;
    return { source: from, target: to, snapshots, origin: received.origin, dataBytes: received.dataBytes, zeroBytes: received.zeroBytes, streamBytes: received.streamBytes, verified, sourceKept: opts.keepSource };
  } finally {
    await b?.close();
    await a.close();
  }
}

/** The target's head against the source's frozen point, and the newest snapshot on both; a difference stops the migration. */
async function verify(a: ChainSide, b: ChainSide, volume: string, newName: string, temp: string, last: string | null): Promise<ColdMigrateResult['verified']> {
  // Each side reads its own pool: the two run at once.
  const [head, want] = await Promise.all([b.digest(newName, null), a.digest(volume, temp)]);
  if (head !== want) throw new Error(`verification failed: ${b.poolName}/${newName} does not read as ${a.poolName}/${volume} did (SHA-256 ${head.slice(0, 16)}… against ${want.slice(0, 16)}…); the source is kept`);
  if (last === null) return { head, last: null };
  const [got, had] = await Promise.all([b.digest(newName, last), a.digest(volume, last)]);
  if (got !== had) throw new Error(`verification failed: ${b.poolName}/${newName}@${last} does not read as ${a.poolName}/${volume}@${last} (SHA-256 ${got.slice(0, 16)}… against ${had.slice(0, 16)}…); the source is kept`);
  return { head, last: { snapshot: last, digest: got } };
}
