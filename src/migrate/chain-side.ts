import type { Readable, Writable } from 'node:stream';
import { ControlClient } from '../host/control-client.js';
import { openRegisteredPool } from '../host/open-pool.js';
import { volumeExists } from '../host/diff-import.js';
import { abandonReceive, chainDigest, holdsOrigin, dropSnapshot, removeChain, sourceState, takeTemporary, type SourceState } from './chain-ops.js';
import { receiveChain, type ReceiveResult } from './receive.js';
import { sendChain, type SendOptions, type SendResult } from './send.js';
import { servedSide } from './send-transfer.js';

export interface SendRequest {
  volume: string;
  to: string;
  from: string | null;
  resume?: string;
  /** Leave a clone's origin out: the receiving pool holds it (holdsOrigin said so). */
  omitBase?: boolean;
}

/**
 * One pool as send, receive and migrate see it: opened here, or served by
 * `strata serve` and reached through its control socket. Every step runs
 * the same pool-side function (chain-ops.ts, send.ts, receive.ts) either
 * way; only where it runs differs.
 */
export interface ChainSide {
  readonly poolName: string;
  readonly served: boolean;
  exists(volume: string): Promise<boolean>;
  /** This pool holds a template known to be origin `uuid` (a snapshot's or a template's). */
  holdsOrigin(uuid: string): Promise<boolean>;
  /** NBD clients connected to the volume now (0 when the pool is not served). */
  clients(volume: string): Promise<number>;
  state(volume: string): Promise<SourceState>;
  takeTemporary(volume: string): Promise<string>;
  dropSnapshot(volume: string, snapshot: string): Promise<void>;
  digest(volume: string, snapshot: string | null): Promise<string>;
  removeChain(volume: string): Promise<void>;
  abandon(volume: string): Promise<{ removed: string[] }>;
  /** Everything done so far is durable. */
  flush(volume: string): Promise<void>;
  send(req: SendRequest, out: Writable, opts: SendOptions): Promise<SendResult>;
  receive(volume: string, source: Readable, opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void }): Promise<ReceiveResult>;
  close(): Promise<void>;
}

export async function openSide(home: string, poolName: string, opts: { write: boolean }): Promise<ChainSide> {
  const control = await ControlClient.connect(home, poolName);
  if (control) return servedSide(control, poolName, home);
  const opened = await openRegisteredPool(home, poolName, { readOnly: !opts.write });
  const pool = opened.pool;
  return {
    poolName,
    served: false,
    exists: (v) => volumeExists(pool, v),
    holdsOrigin: async (uuid) => holdsOrigin(pool, home, poolName, uuid) !== null,
    clients: async () => 0,
    state: (v) => sourceState(pool, v),
    takeTemporary: (v) => takeTemporary(pool, v),
    dropSnapshot: (v, s) => dropSnapshot(pool, v, s),
    digest: (v, s) => chainDigest(pool, v, s),
    removeChain: (v) => removeChain(pool, v),
    abandon: (v) => abandonReceive(pool, home, poolName, v),
    flush: () => pool.flush(),
    send: (req, out, o) => sendChain(pool, poolName, req, out, o),
    receive: (v, source, o) => receiveChain(pool, { poolName, home }, v, source, o),
    close: async () => {
      await pool.flush();
      await opened.close();
    },
  };
}
