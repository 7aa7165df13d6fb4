import type net from 'node:net';
import { isValidName, type Pool } from '../qcowlike/index.js';
import type { ControlProgress } from '../host/control-protocol.js';
import { jobsFor } from '../host/jobs.js';
import { requestFlag } from '../host/request-fields.js';
import { pushAsJob, type PushEvent, type PushOutcome } from './nbd-push-job.js';
import { pushOnlineAsJob, type LiveVolumeSource } from './nbd-push-online.js';
import { parseNbdUri } from './nbd-push-uri.js';

/**
 * `strata migrate POOL/VOL nbd://…` on a pool that `strata serve` holds:
 * the push runs in the server (which holds the pool's lock and sees the
 * volume's clients), as a job of the pool, and the command follows it by
 * the progress lines of this request: the first names the job, so that
 * Ctrl-C on the command can cancel it; the command's connection closing
 * cancels it too.
 */
export interface NbdPushRequest {
  op: 'migrate-nbd';
  volume: string;
  uri: string;
  online: boolean;
  rate?: number;
}

export const NBD_PUSH_OP = 'migrate-nbd';

/** A progress line of a push: the job and its phase beside the fraction done. */
export type NbdPushProgress = ControlProgress & PushEvent;

export function isNbdPushRequest(req: { op: string }): req is NbdPushRequest {
  return req.op === NBD_PUSH_OP;
}

export function parseNbdPushRequest(raw: Record<string, unknown>): NbdPushRequest {
  const v = raw.volume;
  if (typeof v !== 'string' || !isValidName(v)) throw new Error(`'${NBD_PUSH_OP}' needs 'volume' (a volume name)`);
  const uri = raw.uri;
  if (typeof uri !== 'string') throw new Error(`'${NBD_PUSH_OP}' needs 'uri' (the NBD URI of the target)`);
  parseNbdUri(uri);
  const rate = raw.rate;
  if (rate !== undefined && (typeof rate !== 'number' || !Number.isSafeInteger(rate) || rate <= 0)) throw new Error("'rate' must be a whole number of bytes per second above 0");
  return { op: NBD_PUSH_OP, volume: v, uri, online: requestFlag(raw, 'online'), ...(rate !== undefined ? { rate } : {}) };
}

export interface NbdPushServerContext {
  home: string;
  poolName: string;
  clientsOf(volume: string): number;
  /** The server's live volumes: what an online push mirrors through. */
  live: LiveVolumeSource | undefined;
  /** The server stopping. */
  stopping: AbortSignal;
  /** The connection the request came on: its progress lines go there, and its closing cancels the push. */
  conn: net.Socket;
  send(line: NbdPushProgress): void;
}

/** The server's side of a push request. */
export async function runNbdPushRequest(pool: Pool, req: NbdPushRequest, ctx: NbdPushServerContext): Promise<PushOutcome> {
  const gone = new AbortController();
  const onClose = (): void => gone.abort(new Error('the command that started the push went away'));
  ctx.conn.once('close', onClose);
  try {
    const signal = AbortSignal.any([ctx.stopping, gone.signal]);
    const common = { poolName: ctx.poolName, jobs: jobsFor(ctx.home, ctx.poolName), signal, onEvent: throttled(ctx.send) };
    if (!req.online) return await pushAsJob(pool, req.volume, parseNbdUri(req.uri), { ...common, clientsOf: ctx.clientsOf }, req.rate);
    if (!ctx.live) throw new Error(`pool '${ctx.poolName}': this server cannot mirror its volumes' writes (--online needs the server to hold the export)`);
    return await pushOnlineAsJob(pool, req.volume, parseNbdUri(req.uri), { ...common, home: ctx.home, live: ctx.live }, req.rate);
  } finally {
    ctx.conn.off('close', onClose);
  }
}

export function progressLine(e: PushEvent): NbdPushProgress {
  return { progress: e.total > 0 ? e.done / e.total : 0, bytes: e.done, ...e };
}

/** Progress at most ten times a second, but every change of phase and every phase's end. */
function throttled(send: (line: NbdPushProgress) => void): (e: PushEvent) => void {
  let last = 0;
  let phase = '';
  return (e) => {
    const now = Date.now();
    if (e.phase === phase && e.done < e.total && now - last < 100) return;
    last = now;
    phase = e.phase;
    send(progressLine(e));
  };
}
