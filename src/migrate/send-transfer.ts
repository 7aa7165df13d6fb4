import type net from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { isValidName, type Pool } from '../qcowlike/index.js';
import type { ControlClient } from '../host/control-client.js';
import { connectStreamSocket, diffViaServer, endWritten } from '../host/diff-transfer.js';
import { volumeExists } from '../host/diff-import.js';
import { abandonReceive, chainDigest, holdsOrigin, dropSnapshot, removeChain, sourceState, takeTemporary } from './chain-ops.js';
import type { ChainSide } from './chain-side.js';
import { receiveChain, ReceiveInterrupted, type ReceiveContext, type ReceiveResult } from './receive.js';
import { ReceiveNote } from './receive-note.js';
import { sendChain, type SendResult } from './send.js';

/**
 * send, receive and migrate on a pool that `strata serve` holds: the same
 * pool-side functions run in the server; a stream travels over a Unix
 * socket of the command's own, as export-diff and import-diff do
 * (diff-transfer.ts), and the steps around it are one request each.
 */
export type SendTransferRequest =
  | { op: 'chain-send'; volume: string; to: string; from: string | null; resume?: string; omitBase?: boolean; rate?: number; socket: string }
  | { op: 'chain-receive'; volume: string; socket: string }
  | { op: 'chain-step'; step: ChainStep; volume: string; snapshot: string | null; uuid?: string };

export type ChainStep = 'exists' | 'holds-origin' | 'state' | 'clients' | 'take-temporary' | 'drop-snapshot' | 'digest' | 'remove-chain' | 'abandon' | 'flush';
const STEPS: ReadonlySet<string> = new Set<ChainStep>(['exists', 'holds-origin', 'state', 'clients', 'take-temporary', 'drop-snapshot', 'digest', 'remove-chain', 'abandon', 'flush']);
/** Steps that change nothing: allowed on a pool served read-only. */
const READ_STEPS: ReadonlySet<string> = new Set<ChainStep>(['exists', 'holds-origin', 'state', 'clients', 'digest']);

export const SEND_TRANSFER_OPS: ReadonlySet<string> = new Set(['chain-send', 'chain-receive', 'chain-step']);

export function isSendTransfer(req: { op: string }): req is SendTransferRequest {
  return SEND_TRANSFER_OPS.has(req.op);
}

export function parseSendTransferRequest(raw: Record<string, unknown>): SendTransferRequest {
  const op = String(raw.op);
  const name = (key: string, nullable: boolean): string | null => {
    const v = raw[key] ?? null;
    if (v === null && nullable) return null;
    if (typeof v !== 'string' || !isValidName(v)) throw new Error(`'${op}' needs '${key}' (a name${nullable ? ', or null' : ''})`);
    return v;
  };
  const socket = (): string => {
    const s = raw.socket;
    if (typeof s !== 'string' || !path.isAbsolute(s)) throw new Error(`'${op}' needs 'socket' (the absolute path of the command's Unix socket)`);
    return s;
  };
  const volume = name('volume', false)!;
  if (op === 'chain-send') {
    const resume = raw.resume;
    if (resume !== undefined && typeof resume !== 'string') throw new Error("'chain-send': 'resume' is a token");
    const rate = raw.rate;
    if (rate !== undefined && (typeof rate !== 'number' || !(rate > 0))) throw new Error("'chain-send': 'rate' is bytes per second above 0");
    const omitBase = raw.omitBase;
    if (omitBase !== undefined && typeof omitBase !== 'boolean') throw new Error("'chain-send': 'omitBase' is true or false");
    return { op, volume, to: name('to', false)!, from: name('from', true), socket: socket(), ...(resume !== undefined ? { resume } : {}), ...(omitBase !== undefined ? { omitBase } : {}), ...(rate !== undefined ? { rate } : {}) };
  }
  if (op === 'chain-receive') return { op, volume, socket: socket() };
  if (op === 'chain-step') {
    if (typeof raw.step !== 'string' || !STEPS.has(raw.step)) throw new Error(`'chain-step' needs 'step' (${[...STEPS].join(', ')})`);
    const uuid = raw.uuid;
    if (uuid !== undefined && (typeof uuid !== 'string' || uuid.length === 0 || uuid.length > 128)) throw new Error("'chain-step': 'uuid' is a UUID");
    return { op, step: raw.step as ChainStep, volume, snapshot: name('snapshot', true), ...(uuid !== undefined ? { uuid } : {}) };
  }
  throw new Error(`unknown request '${op}'`);
}

/** The server's side of a request. */
export async function runSendTransfer(pool: Pool, req: SendTransferRequest, ctx: ReceiveContext & { readOnly: boolean }): Promise<unknown> {
  const writes = req.op === 'chain-receive' || (req.op === 'chain-step' && !READ_STEPS.has(req.step));
  if (writes && ctx.readOnly) throw new Error(`pool '${ctx.poolName}' is served read-only`);
  if (req.op === 'chain-step') return runStep(pool, req, ctx);
  const sock = await connectStreamSocket(req.socket);
  try {
    if (req.op === 'chain-send') {
      const result = await sendChain(pool, ctx.poolName, req, sock, req.rate !== undefined ? { rate: req.rate } : {});
      await endWritten(sock);
      return result;
    }
    const result = await receiveChain(pool, ctx, req.volume, sock);
    sock.end();
    return result;
  } catch (err) {
    sock.destroy();
    throw err;
  }
}

async function runStep(pool: Pool, req: Extract<SendTransferRequest, { op: 'chain-step' }>, ctx: ReceiveContext): Promise<unknown> {
  const snapshot = (): string => {
    if (req.snapshot === null) throw new Error(`'chain-step' ${req.step} needs 'snapshot'`);
    return req.snapshot;
  };
  switch (req.step) {
    case 'exists':
      return volumeExists(pool, req.volume);
    case 'holds-origin':
      if (req.uuid === undefined) throw new Error("'chain-step' holds-origin needs 'uuid'");
      return holdsOrigin(pool, ctx.home, ctx.poolName, req.uuid) !== null;
    case 'state':
      return sourceState(pool, req.volume);
    case 'clients':
      return ctx.clientsOf?.(req.volume) ?? 0;
    case 'take-temporary':
      return takeTemporary(pool, req.volume);
    case 'drop-snapshot':
      return dropSnapshot(pool, req.volume, snapshot());
    case 'digest':
      return chainDigest(pool, req.volume, req.snapshot);
    case 'remove-chain': {
      await removeChain(pool, req.volume);
      ctx.changed?.();
      return null;
    }
    case 'flush':
      return pool.flush();
    case 'abandon': {
      const r = await abandonReceive(pool, ctx.home, ctx.poolName, req.volume);
      ctx.changed?.();
      return r;
    }
  }
}

/** The command's view of a served pool. */
export function servedSide(control: ControlClient, poolName: string, home: string): ChainSide {
  const step = async <T>(s: ChainStep, volume: string, snapshot: string | null = null, uuid?: string): Promise<T> => (await control.request({ op: 'chain-step', step: s, volume, snapshot, ...(uuid !== undefined ? { uuid } : {}) })).result as T;
  return {
    poolName,
    served: true,
    exists: (v) => step<boolean>('exists', v),
    // The step names a volume by rule; the UUID is what is asked about.
    holdsOrigin: (uuid) => step<boolean>('holds-origin', 'origin', null, uuid),
    clients: (v) => step<number>('clients', v),
    state: (v) => step('state', v),
    takeTemporary: (v) => step<string>('take-temporary', v),
    dropSnapshot: (v, s) => step<void>('drop-snapshot', v, s),
    digest: (v, s) => step<string>('digest', v, s),
    removeChain: (v) => step<void>('remove-chain', v),
    abandon: (v) => step<{ removed: string[] }>('abandon', v),
    flush: (v) => step<void>('flush', v),
    send: (req, out, opts) =>
      diffViaServer<SendResult>(control, { op: 'chain-send', ...req, ...(opts.rate !== undefined ? { rate: opts.rate } : {}) }, async (sock) => {
        let got = 0;
        sock.on('data', (b: Buffer) => opts.onProgress?.((got += b.length), 0));
        await untilAborted(sock, opts.signal, pipeline(sock, out, { end: false }));
      }),
    receive: async (volume, source, opts) => {
      try {
        return await diffViaServer<ReceiveResult>(control, { op: 'chain-receive', volume }, (sock) => untilAborted(sock, opts.signal, pipeline(source, sock)));
      } catch (err) {
        const token = new ReceiveNote(home, poolName).token(volume);
        if (token === null || err instanceof ReceiveInterrupted) throw err;
        const message = err instanceof Error ? err.message : String(err);
        // The server's own ReceiveInterrupted arrives as its message, which says so already.
        throw new ReceiveInterrupted(message.startsWith('receive into ') ? message : `receive into ${poolName}/${volume} stopped: ${message}`, token, err);
      }
    },
    close: async () => control.close(),
  };
}

/** Copies until done or until `signal`, which ends the server's connection (it stops there, as on a cut stream). */
async function untilAborted(sock: net.Socket, signal: AbortSignal | undefined, moving: Promise<void>): Promise<void> {
  const stop = (): void => void sock.destroy(new Error('interrupted'));
  signal?.addEventListener('abort', stop, { once: true });
  try {
    await moving;
  } finally {
    signal?.removeEventListener('abort', stop);
  }
}
