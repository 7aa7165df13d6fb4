import type { Readable, Writable } from 'node:stream';
import type { JobControl } from '../host/jobs.js';
import { openSide } from './chain-side.js';
import type { ReceiveResult } from './receive.js';
import { decodeToken } from './resume-token.js';
import { isTemporary } from './send-plan.js';
import type { SendResult } from './send.js';

export interface SendVolumeResult extends SendResult {
  pool: string;
  /** The snapshot taken for this send of the volume as it is now (removed again once the stream is out), or null. */
  temporary: string | null;
}

/**
 * `strata send`: the stream of POOL/VOL@SNAP, or of the volume as it is now
 * (a temporary snapshot, removed once the whole stream is written; kept
 * when it was not, for `send --resume`), on a pool opened here or served.
 */
export async function sendVolume(home: string, ref: { pool: string; volume: string; snapshot: string | null }, opts: { from: string | null; resume?: string; rate?: number }, out: Writable, job: Pick<JobControl, 'signal' | 'progress'>): Promise<SendVolumeResult> {
  const token = opts.resume === undefined ? null : decodeToken(opts.resume);
  const side = await openSide(home, ref.pool, { write: ref.snapshot === null });
  try {
    let to = ref.snapshot ?? token?.to ?? null;
    const from = opts.from ?? (token && ref.snapshot === null ? token.from : null);
    const temporary = to === null ? await side.takeTemporary(ref.volume) : isTemporary(to) ? to : null;
    to ??= temporary!;
    let result: SendResult;
    try {
      result = await side.send({ volume: ref.volume, to, from, ...(opts.resume !== undefined ? { resume: opts.resume } : {}) }, out, { signal: job.signal, rate: opts.rate, onProgress: (done, total) => job.progress(done, total) });
    } catch (err) {
      const broken = (err as NodeJS.ErrnoException).code === 'EPIPE' || (err instanceof Error && err.message.startsWith('the stream was closed'));
      if (temporary === null && !broken) throw err;
      const message = broken ? 'the reader of the stream went away (a broken pipe)' : err instanceof Error ? err.message : String(err);
      if (temporary === null) throw new Error(message);
      throw new Error(`${message}; the snapshot ${ref.pool}/${ref.volume}@${temporary} taken for this send stays for send --resume (strata snapshot delete removes it)`);
    }
    if (temporary !== null) await side.dropSnapshot(ref.volume, temporary);
    return { pool: ref.pool, ...result, temporary };
  } finally {
    await side.close();
  }
}

/** `strata receive`: applies the stream on `source` to POOL/VOL, opened here or served. */
export async function receiveVolume(home: string, ref: { pool: string; volume: string }, source: Readable, job: Pick<JobControl, 'signal' | 'progress'>): Promise<ReceiveResult & { pool: string }> {
  const side = await openSide(home, ref.pool, { write: true });
  try {
    return { pool: ref.pool, ...(await side.receive(ref.volume, source, { signal: job.signal, onProgress: (done, total) => job.progress(done, total) })) };
  } finally {
    await side.close();
  }
}
