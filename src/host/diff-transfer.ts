import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Pool } from '../qcowlike/index.js';
import { isValidName } from '../qcowlike/index.js';
import type { ControlClient } from './control-client.js';
import type { ControlRequest } from './control-protocol.js';
import { snapshotField } from './diff-admin.js';
import { exportDiff, type ExportDiffResult } from './diff-export.js';
import { importDiff, type ImportDiffContext, type ImportDiffResult } from './diff-import.js';

/**
 * export-diff and import-diff on a pool that `strata serve` holds. The verb
 * runs in the server, on its open pool, by the same function a command runs
 * in-process; only the stream's bytes travel: the command listens on a Unix
 * socket of its own (in a fresh 0700 directory), names it in the request,
 * and the server connects to it and writes the stream there (export) or
 * reads it from there (import). The command moves the bytes between that
 * socket and the file, stdin or stdout, so the server never opens a path
 * the user typed.
 */
export type DiffTransferRequest = { op: 'export-diff'; volume: string; from: string | null; to: string; socket: string } | { op: 'import-diff'; volume: string; socket: string };

export const DIFF_TRANSFER_OPS: ReadonlySet<string> = new Set(['export-diff', 'import-diff']);

export function isDiffTransfer(req: { op: string }): req is DiffTransferRequest {
  return DIFF_TRANSFER_OPS.has(req.op);
}

export function parseDiffTransferRequest(raw: Record<string, unknown>): DiffTransferRequest {
  const v = raw.volume;
  if (typeof v !== 'string' || !isValidName(v)) throw new Error(`'${String(raw.op)}' needs 'volume' (a volume name)`);
  const s = raw.socket;
  if (typeof s !== 'string' || !path.isAbsolute(s)) throw new Error(`'${String(raw.op)}' needs 'socket' (the absolute path of the command's Unix socket)`);
  if (raw.op === 'export-diff') return { op: 'export-diff', volume: v, from: snapshotField(raw, 'from', true), to: snapshotField(raw, 'to', false)!, socket: s };
  if (raw.op === 'import-diff') return { op: 'import-diff', volume: v, socket: s };
  throw new Error(`unknown request '${String(raw.op)}'`);
}

/** The server's side: connects to the command's socket and runs the verb with it as the stream. */
export async function runDiffTransfer(pool: Pool, req: DiffTransferRequest, ctx: ImportDiffContext & { readOnly: boolean }): Promise<ExportDiffResult | ImportDiffResult> {
  if (req.op === 'import-diff' && ctx.readOnly) throw new Error(`pool '${ctx.poolName}' is served read-only`);
  const sock = await connectStreamSocket(req.socket);
  try {
    if (req.op === 'export-diff') {
      const result = await exportDiff(pool, ctx.poolName, req, sock);
      await endWritten(sock);
      return result;
    }
    const result = await importDiff(pool, ctx, req.volume, sock);
    sock.end();
    return result;
  } catch (err) {
    sock.destroy();
    throw err;
  }
}

/** Ends a socket the server wrote a stream into, once all of it has gone out. */
export function endWritten(sock: net.Socket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.end(() => resolve());
  });
}

/** The server connects to the command's stream socket. */
export function connectStreamSocket(file: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(file);
    sock.once('connect', () => {
      sock.off('error', reject);
      // The command going away is seen by the read or write that meets it; not as an uncaught error.
      sock.on('error', () => undefined);
      resolve(sock);
    });
    sock.once('error', (err) => reject(new Error(`cannot reach the command's stream socket ${file}: ${err.message}`)));
  });
}

/** A streaming request as the command gives it: the socket is its own, named here. */
type WithoutSocket<T> = T extends unknown ? Omit<T, 'socket'> : never;

/**
 * The command's side: listens on a socket of its own, sends the request
 * naming it, and hands the server's connection to `move` (which copies the
 * stream between it and the user's file). Resolves with the server's result
 * once both the reply and the copy are done; the first failure wins, and
 * ends the other side.
 */
export async function diffViaServer<R>(control: ControlClient, req: WithoutSocket<Extract<ControlRequest, { socket: string }>>, move: (sock: net.Socket) => Promise<void>): Promise<R> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-diff-'));
  const file = path.join(dir, 's');
  const server = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => resolve());
    });
    let conn: net.Socket | undefined;
    let moved: Promise<void> | undefined;
    const accepted = new Promise<void>((resolve) => {
      server.once('connection', (c) => {
        conn = c;
        // The copy sees a broken connection on its own reads and writes.
        c.on('error', () => undefined);
        // One connection only: nobody else gets in once the server's is here.
        server.close();
        moved = move(c);
        resolve();
      });
    });
    const reply = control.request({ ...req, socket: file } as ControlRequest);
    // Either the server connects and the copy runs, or the request fails before it did
    // (a server that succeeded did connect, even if its reply came in first).
    await Promise.race([accepted, reply.then(() => accepted, () => undefined)]);
    const copy = (moved ?? Promise.resolve()).then(
      () => null,
      (err: unknown) => {
        // The server is still at the other end: end its connection so that it stops too.
        conn?.destroy();
        return err;
      },
    );
    const answer = reply.then(
      (r) => ({ ok: true as const, result: r.result as R }),
      (err: unknown) => {
        conn?.destroy();
        return { ok: false as const, err };
      },
    );
    const [copyErr, got] = await Promise.all([copy, answer]);
    // A local failure (the file, the disk) says more than the server's "connection closed"
    // that it causes; a socket error on this side says less than the server's reason.
    if (copyErr !== null && !isSocketError(copyErr)) throw copyErr;
    if (!got.ok) throw got.err;
    if (copyErr !== null) throw copyErr;
    return got.result;
  } finally {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function isSocketError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EPIPE' || code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ERR_STREAM_DESTROYED';
}
