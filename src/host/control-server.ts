import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ADMIN_OPS, adminReads, runAdmin, type AdminContext, type AdminRequest } from './admin.js';
import { chainRunsLong } from './chain-requests.js';
import type { Pool } from '../qcowlike/index.js';
import type { RaidArray } from '../raid/index.js';
import { controlSocketPath, LineSplitter, MAX_LINE, parseRequest, type ControlLine, type ControlReply, type ControlRequest } from './control-protocol.js';
import { raidWrites, runRaid, type RaidRequest, type RaidResult } from './raid-admin.js';
import { ENDPOINT_OP, type ServedEndpoint } from './served-endpoint.js';
import { isJobRequest, runJobRequest } from './job-requests.js';
import { isDiffTransfer, runDiffTransfer } from './diff-transfer.js';
import { migrateOnline } from './online-migration.js';
import { ONLINE_MIGRATION_OP } from './online-migration-request.js';
import { isSendTransfer, runSendTransfer } from '../migrate/send-transfer.js';
import { isNbdPushRequest, runNbdPushRequest } from '../migrate/nbd-push-request.js';
import { jobsFor } from './jobs.js';
import { oneLine, type OpenedArray } from './open-pool.js';
import { recordMembers } from './raid-members.js';
import { Registry } from './registry.js';

/** The longest Unix socket path Linux takes (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;

export interface ControlServerOptions {
  home: string;
  pool: string;
  /** The served pool, for the pool and volume commands. */
  opened: Pool;
  /** The array under it, when it is on RAID, for the raid commands. */
  raid?: OpenedArray;
  /** What the server knows of the volumes' clients, and how it hears of new ones. */
  admin: Pick<AdminContext, 'clientsOf' | 'disconnect' | 'changed' | 'live'>;
  /** The server's --rebuild-rate, for requests that give none. */
  rebuildRate: number;
  readOnly: boolean;
  /** Members added here are opened with O_DIRECT, like the served array's (`serve --cache none`). */
  direct: boolean;
  log: (message: string) => void;
  /** Where a volume's export is reached, for import and export on the served pool. */
  endpoint?: (volume: string) => Promise<ServedEndpoint>;
}

/**
 * Lets every command manage a pool while `strata serve` holds it locked: the
 * pool and volume verbs (the same functions the CLI runs in-process) and, on
 * a RAID pool, status, fail, remove, add, replace, rebuild and scrub, run
 * here on the open pool while clients keep their I/O going. Pool and volume
 * verbs from all connections run one at a time, so two administrators never
 * interleave.
 */
export class ControlServer {
  private readonly connections = new Set<net.Socket>();
  /** The pool and volume verbs, from every connection, in arrival order. */
  private queue: Promise<void> = Promise.resolve();
  /** Merges and copies running beside the queue; a closing server cancels them and waits for them to stop. */
  private readonly long = new Set<Promise<unknown>>();
  private readonly stopping = new AbortController();

  private constructor(
    private readonly server: net.Server,
    readonly socketPath: string,
    private readonly opts: ControlServerOptions,
  ) {
    server.on('connection', (c) => this.serve(c));
  }

  /**
   * Listens on HOME/run/POOL.sock. Undefined (with a warning) when it cannot:
   * the pool is still served, only not managed online.
   */
  static async start(opts: ControlServerOptions): Promise<ControlServer | undefined> {
    const file = controlSocketPath(opts.home, opts.pool);
    const warn = (why: string): undefined => void opts.log(`pool '${opts.pool}': no control socket (${why}); commands cannot reach it while it is served`);
    if (Buffer.byteLength(file) > MAX_SOCKET_PATH) return warn(`${file} is longer than a Unix socket path may be`);
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      fs.chmodSync(path.dirname(file), 0o700);
      // Holding the pool's member locks means no other server has it: a socket left here is stale.
      const old = fs.lstatSync(file, { throwIfNoEntry: false });
      if (old && !old.isSocket()) return warn(`${file} exists and is not a socket`);
      if (old) fs.rmSync(file);
      const server = net.createServer();
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(file, () => {
          server.off('error', reject);
          resolve();
        });
      });
      fs.chmodSync(file, 0o600);
      return new ControlServer(server, file, opts);
    } catch (err) {
      return warn(oneLine(err));
    }
  }

  /**
   * Stops listening, drops the connections (a waiting client is told nothing
   * more), lets a change to the member set that is under way finish (they run
   * one at a time through rebuildsAt), and removes the socket.
   */
  async close(): Promise<void> {
    for (const c of this.connections) c.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.queue;
    this.stopping.abort(new Error(`the server of pool '${this.opts.pool}' is stopping`));
    await Promise.allSettled([...this.long]);
    await this.opts.raid?.rebuildsAt(this.opts.rebuildRate, async () => undefined);
    fs.rmSync(this.socketPath, { force: true });
  }

  private serve(conn: net.Socket): void {
    this.connections.add(conn);
    conn.on('close', () => this.connections.delete(conn));
    conn.on('error', () => undefined);
    const lines = new LineSplitter(MAX_LINE);
    // Requests on one connection are answered in order.
    let chain = Promise.resolve();
    let refused = false;
    conn.on('data', (chunk: Buffer) => {
      if (refused) return;
      let got: string[];
      try {
        got = lines.push(chunk);
      } catch (err) {
        // Whatever follows an over-long line is not read: the connection ends here.
        refused = true;
        send(conn, { ok: false, error: oneLine(err) });
        conn.end();
        return;
      }
      for (const line of got) {
        if (line.trim() === '') continue;
        chain = chain.then(async () => send(conn, await this.answer(line, conn)));
      }
    });
  }

  private async answer(line: string, conn: net.Socket): Promise<ControlReply> {
    const messages: string[] = [];
    const unlisten = this.opts.raid?.listen((m) => messages.push(m));
    try {
      const req = parseRequest(line);
      if (isJobRequest(req)) return { ok: true, messages, result: runJobRequest(jobsFor(this.opts.home, this.opts.pool), req) };
      if (isAdmin(req)) return { ok: true, messages, result: await this.admin(req) };
      // A stream may take hours: it runs beside the queue of admin verbs, not in it.
      if (isDiffTransfer(req)) return { ok: true, messages, result: await runDiffTransfer(this.opts.opened, req, { poolName: this.opts.pool, home: this.opts.home, readOnly: this.opts.readOnly, ...this.opts.admin }) };
      if (req.op === ONLINE_MIGRATION_OP) {
        if (this.opts.readOnly) throw new Error(`pool '${this.opts.pool}' is served read-only`);
        return { ok: true, messages, result: await this.beside(migrateOnline(this.opts.opened, req, { poolName: this.opts.pool, home: this.opts.home, online: true, jobs: jobsFor(this.opts.home, this.opts.pool), signal: this.stopping.signal, ...this.opts.admin })) };
      }
      if (isSendTransfer(req)) return { ok: true, messages, result: await runSendTransfer(this.opts.opened, req, { poolName: this.opts.pool, home: this.opts.home, readOnly: this.opts.readOnly, ...this.opts.admin }) };
      if (isNbdPushRequest(req)) {
        const { home, pool, opened, admin } = this.opts;
        return { ok: true, messages, result: await this.beside(runNbdPushRequest(opened, req, { home, poolName: pool, clientsOf: (v) => admin.clientsOf?.(v) ?? 0, live: admin.live, stopping: this.stopping.signal, conn, send: (l) => send(conn, l) })) };
      }
      if (req.op === ENDPOINT_OP) {
        if (!this.opts.endpoint) throw new Error(`pool '${this.opts.pool}': this server does not say where its exports are`);
        return { ok: true, messages, result: await this.opts.endpoint(req.volume) };
      }
      return { ok: true, ...(await this.raid(req, (l) => send(conn, l))) };
    } catch (err) {
      return { ok: false, error: oneLine(err) };
    } finally {
      unlisten?.();
    }
  }

  /** Pool and volume verbs from every connection run one at a time (raid verbs keep their own order: a rebuild may take hours). */
  private admin(req: AdminRequest): Promise<unknown> {
    if (!adminReads(req) && this.opts.readOnly) throw new Error(`pool '${this.opts.pool}' is served read-only`);
    const verb = (): Promise<unknown> => runAdmin(this.opts.opened, req, { poolName: this.opts.pool, online: true, jobs: jobsFor(this.opts.home, this.opts.pool), ...this.opts.admin });
    // A merge or copy may take hours: it runs beside the queue, as a job that job list and job cancel reach.
    if (chainRunsLong(req)) return this.beside(runAdmin(this.opts.opened, req, { poolName: this.opts.pool, online: true, jobs: jobsFor(this.opts.home, this.opts.pool), signal: this.stopping.signal, ...this.opts.admin }));
    const run = this.queue.then(verb);
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Work that may take hours, run beside the queue; a closing server cancels it and waits for it to stop. */
  private beside<T>(p: Promise<T>): Promise<T> {
    this.long.add(p);
    void p.then(
      () => this.long.delete(p),
      () => this.long.delete(p),
    );
    return p;
  }

  /** A RAID verb, run by the same function as `strata raid` runs in-process, on the served array. */
  private raid(req: RaidRequest, progress: (l: ControlLine) => void): Promise<RaidResult> {
    const raid = this.opts.raid;
    if (!raid) throw new Error(`pool '${this.opts.pool}' is not on a RAID array`);
    if (raidWrites(req) && this.opts.readOnly) throw new Error(`pool '${this.opts.pool}' is served read-only`);
    return runRaid(raid.array, req, {
      home: this.opts.home,
      rebuildRate: this.opts.rebuildRate,
      direct: this.opts.direct,
      rebuildsAt: (rate, fn) => raid.rebuildsAt(rate, fn),
      record: () => this.record(raid.array),
      jobs: jobsFor(this.opts.home, this.opts.pool),
      progress,
      listen: (l) => raid.listen(l),
    });
  }

  private record(array: RaidArray): void {
    try {
      recordMembers(new Registry(this.opts.home), this.opts.pool, array);
    } catch (err) {
      throw new Error(`done, but the registry could not record the new member list: ${oneLine(err)}`);
    }
  }
}

function isAdmin(req: ControlRequest): req is AdminRequest {
  return ADMIN_OPS.has(req.op);
}

function send(conn: net.Socket, line: ControlLine): void {
  if (!conn.destroyed) conn.write(`${JSON.stringify(line)}\n`);
}
