import { PassThrough } from 'node:stream';
import type { Pool } from '../qcowlike/index.js';
import { receiveChain, type ReceiveResult } from './receive.js';
import { sendChain } from './send.js';

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
  const pipe = new PassThrough({ highWaterMark: PIPE_BYTES });
  const sending = sendChain(src.pool, src.poolName, { volume: req.volume, to: req.to, from: null }, pipe, { signal: opts.signal, onProgress: opts.onProgress, rate: opts.rate }).then(
    () => {
      pipe.end();
      return null;
    },
    (err: unknown) => {
      pipe.destroy(err instanceof Error ? err : new Error(String(err)));
      return err;
    },
  );
  const receiving = receiveChain(dst.pool, { poolName: dst.poolName, home: dst.home }, req.newName, pipe, { signal: opts.signal }).then(
    (r) => ({ ok: true as const, r }),
    (err: unknown) => {
      // The sender is told at its next write: the pipe is closed.
      pipe.destroy();
      return { ok: false as const, err };
    },
  );
  const [sendErr, got] = await Promise.all([sending, receiving]);
  // The sender's own failure (a read error, a cancel) says more than the receiver's "truncated" it causes.
  if (sendErr !== null && (got.ok || !isPipeClosed(sendErr))) throw sendErr;
  if (!got.ok) throw got.err;
  return got.r;
}

function isPipeClosed(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('the stream was closed');
}
