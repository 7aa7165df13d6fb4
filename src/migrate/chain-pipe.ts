import { PassThrough, type Readable, type Writable } from 'node:stream';
import type { Pool } from '../qcowlike/index.js';
import { holdsOrigin, sourceState } from './chain-ops.js';
import { receiveChain, type ReceiveResult } from './receive.js';
import { sendChain, type SendResult } from './send.js';

export interface ChainEnd {
  pool: Pool;
  poolName: string;
  home: string;
}

/** Stream bytes the pipe holds between the two sides: the sender waits (backpressure) beyond it. */
const PIPE_BYTES = 8 * 1024 * 1024;

/**
 * Copies `volume`'s history up to snapshot `to` from one open pool into
 * another, as `newName`: sendChain written into a pipe that receiveChain
 * reads, so every byte goes through the stream's checksums as it would
 * between hosts. After it, `newName`'s head reads as `to`, with the
 * snapshots up to `to` under it (a temporary `to`, named send-tmp-…, is
 * merged into the head on the target; the source's is the caller's). A
 * failure on either side stops the other; the target then holds what the
 * receive made durable (its note names it; abandonReceive removes it).
 */
export async function copyChain(src: ChainEnd, dst: ChainEnd, req: { volume: string; to: string; newName: string }, opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void; rate?: number } = {}): Promise<ReceiveResult> {
  // The origin of a clone that the target holds already (an earlier clone brought it) is left out.
  const origin = (await sourceState(src.pool, req.volume)).origin;
  const omitBase = origin !== null && holdsOrigin(dst.pool, dst.home, dst.poolName, origin) !== null;
  const { received } = await pipeChain(
    (out) => sendChain(src.pool, src.poolName, { volume: req.volume, to: req.to, from: null, omitBase }, out, { signal: opts.signal, onProgress: opts.onProgress, rate: opts.rate }),
    (source) => receiveChain(dst.pool, { poolName: dst.poolName, home: dst.home }, req.newName, source, { signal: opts.signal }),
  );
  return received;
}

/**
 * Runs a sender and a receiver at once over a pipe with backpressure. The
 * sender's own failure (a read error, a cancel) wins over the "truncated"
 * it causes in the receiver; a receiver's failure closes the pipe, which
 * stops the sender at its next write.
 */
export async function pipeChain(send: (out: Writable) => Promise<SendResult>, receive: (source: Readable) => Promise<ReceiveResult>): Promise<{ sent: SendResult; received: ReceiveResult }> {
  const pipe = new PassThrough({ highWaterMark: PIPE_BYTES });
  const sending = send(pipe).then(
    (r) => {
      pipe.end();
      return { ok: true as const, r };
    },
    (err: unknown) => {
      pipe.destroy(err instanceof Error ? err : new Error(String(err)));
      return { ok: false as const, err };
    },
  );
  const receiving = receive(pipe).then(
    (r) => ({ ok: true as const, r }),
    (err: unknown) => {
      pipe.destroy();
      return { ok: false as const, err };
    },
  );
  const [s, r] = await Promise.all([sending, receiving]);
  if (!s.ok && (r.ok || !isPipeClosed(s.err))) throw s.err;
  if (!r.ok) throw r.err;
  if (!s.ok) throw s.err;
  return { sent: s.r, received: r.r };
}

function isPipeClosed(err: unknown): boolean {
  return err instanceof Error && (err.message.startsWith('the stream was closed') || (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE' || (err as NodeJS.ErrnoException).code === 'EPIPE');
}
