import type { Pool } from '../qcowlike/index.js';
import { AdminError, aboutVolume } from '../host/admin.js';
import type { Jobs } from '../host/jobs.js';
import { oneLine } from '../host/pool-errors.js';
import { pushVolume, type PushPhase, type PushResult } from './nbd-push-copy.js';
import { PushTarget } from './nbd-push-target.js';
import type { PushTargetAddress } from './nbd-push-uri.js';

/** What a command following a push hears: the job's number at once, then its progress. */
export interface PushEvent {
  job: number;
  phase: PushPhase;
  done: number;
  total: number;
}

export interface PushContext {
  poolName: string;
  jobs: Jobs;
  /** Clients connected to a volume now (a served pool's); absent when nobody serves the pool. */
  clientsOf?(volume: string): number;
  /** Cancels the push (Ctrl-C, the command's connection gone, the server stopping). */
  signal?: AbortSignal;
  onEvent?(e: PushEvent): void;
}

export interface PushOutcome extends PushResult {
  pool: string;
  volume: string;
  target: string;
  job: number;
  /** An NBD target is no pool of this host's: the volume stays where it was. */
  sourceKept: true;
  /** Mirrored until the last client left (no read-back then: the target may be in use on its own host). */
  online: boolean;
}

/**
 * A cold push of one volume into an NBD export, as a `migrate` job of its
 * pool: the volume must be idle (no client of a served pool connected, at
 * the start or at any chunk), it is only read, and it stays.
 */
export async function pushAsJob(pool: Pool, volume: string, address: PushTargetAddress, ctx: PushContext, rate: number | undefined): Promise<PushOutcome> {
  const ref = `${ctx.poolName}/${volume}`;
  const info = await aboutVolume(ctx.poolName, volume, () => pool.volumeInfo(volume));
  if (info.incomplete) throw new AdminError('EINVAL', `volume '${ref}' is incomplete (an import of it did not finish): there is nothing whole to push`);
  const clients = ctx.clientsOf?.(volume) ?? 0;
  if (clients > 0) throw new AdminError('EBUSY', `volume '${ref}' has ${clients} connected client${clients === 1 ? '' : 's'}: a push of a volume in use needs --online (or disconnect ${clients === 1 ? 'it' : 'them'} first)`);
  const spec = { kind: 'migrate' as const, target: `${ref} to ${address.uri}`, total: info.size, ...(rate !== undefined ? { rate } : {}), restart: `strata migrate ${ref} ${address.uri} (a push starts over)`, ...(ctx.signal ? { signal: ctx.signal } : {}) };
  return ctx.jobs.run(spec, async (job) => {
    const source = await pool.openVolume(volume, { readOnly: true });
    try {
      const target = await PushTarget.open(address, source.size, ref);
      try {
        const result = await pushVolume(source, target, {
          ...(rate !== undefined ? { rate } : {}),
          signal: job.signal,
          onProgress: (phase, done, total) => {
            if (phase === 'copy') job.progress(done, total);
            ctx.onEvent?.({ job: job.id, phase, done, total });
          },
          check: () => {
            if ((ctx.clientsOf?.(volume) ?? 0) > 0) throw new AdminError('EBUSY', `a client connected to '${ref}' during the push: the target may miss its writes; push again with --online`);
          },
        });
        await target.close();
        return { pool: ctx.poolName, volume, target: address.uri, job: job.id, sourceKept: true as const, online: false, ...result };
      } catch (err) {
        // The target is left as far as it got; its connection is dropped rather than flushed.
        target.destroy();
        throw job.signal.aborted ? cancelReason(job.signal, err) : err instanceof AdminError ? err : new Error(`the push of ${ref} to ${address.uri} failed (the source is untouched): ${oneLine(err)}`);
      }
    } finally {
      await source.close();
    }
  });
}

/** What stopped a cancelled push, in words: the cancel's own reason (job cancel, a server stopping), not the abort error it caused. */
export function cancelReason(signal: AbortSignal, err: unknown): unknown {
  return signal.reason instanceof Error && signal.reason.name !== 'AbortError' ? signal.reason : err;
}
