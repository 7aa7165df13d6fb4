import fs from 'node:fs';
import net from 'node:net';
import { BufferBudget, type BudgetStats } from './buffer-budget.js';
import { BufferPool, type BufferPoolStats } from './buffer-pool.js';
import { MAX_PAYLOAD } from './constants.js';
import { ExportTable, type ServedExport } from './export-table.js';
import type { ExportSource } from './exports.js';
import { ExportStats } from './export-stats.js';
import { Handshake } from './handshake.js';
import { ownReads, READ_BUFFER_BYTES } from './socket-reads.js';
import type { TlsSetup } from './tls.js';
import { budgetFloor, DEFAULT_LIMITS, Transmission, type NbdSocket, type TransmissionLimits } from './transmission.js';

export interface NbdServerOptions {
  source: ExportSource;
  /** Serve every export read-only, whatever the source says. */
  readOnly?: boolean;
  tls?: TlsSetup;
  /** Connections beyond this are closed at once. */
  maxConnections?: number;
  /** Connections from one TCP address beyond this are closed at once (0: no cap; Unix-socket clients are not counted). */
  maxConnectionsPerAddress?: number;
  /** Reply and payload bytes the whole server may hold (default 256 MiB, at least 64 MiB). */
  maxBufferBytes?: number;
  /** Bytes one connection may hold (default a quarter of the shared part of the budget, at most 64 MiB). */
  maxConnectionBufferBytes?: number;
  limits?: Partial<TransmissionLimits>;
  /** A client must finish the handshake (TLS included) within this time, however it trickles its bytes. */
  handshakeTimeoutMs?: number;
  /** A connection with nothing received, delivered or running for this long is closed (0, the default: never). */
  idleTimeoutMs?: number;
  /** Called after pooled buffers were dropped, so their memory can be collected now rather than at the next GC. */
  releaseMemory?: () => void;
  log?: (message: string) => void;
}

/** What the server counts instead of logging a line per event. */
export interface NbdServerStats {
  connections: number;
  transmissions: number;
  /** Connections closed at accept: the server-wide cap, the per-address cap, shutdown. */
  refused: { connectionLimit: number; perAddressLimit: number; shuttingDown: number };
  idleClosed: number;
  handshakeTimeouts: number;
  /** Bytes held for requests and their replies, against the budget. */
  budget: BudgetStats;
  /** The most bytes any one connection holds right now. */
  largestConnection: number;
  /** The pooled buffers behind them. */
  buffers: BufferPoolStats;
  /** Connections reading into a buffer of their own (every plain one, when this Node allows it; see socket-reads.ts). */
  ownReads: number;
}

export type ListenAddress = { host: string; port: number } | { socket: string };

const DEFAULT_MAX_CONNECTIONS = 128;
export const DEFAULT_MAX_PER_ADDRESS = 32;
export const DEFAULT_MAX_BUFFER = 256 * 1024 * 1024;
/** The smallest budget whose shared part still holds a request of the largest size. */
export const MIN_MAX_BUFFER = 2 * MAX_PAYLOAD;
/** What one connection may hold at most, by default (less when a quarter of the shared budget is less). */
const MAX_CONNECTION_BUFFER = 64 * 1024 * 1024;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;

/**
 * An NBD server: one listener or more (TCP, Unix socket), many connections,
 * each its own handshake then transmission. A connection's failure, however
 * it fails, ends that connection only.
 */
export class NbdServer {
  private readonly listeners: net.Server[] = [];
  private readonly exports: ExportTable;
  private readonly connections = new Set<net.Socket>();
  private readonly transmissions = new Set<Transmission>();
  /** Every connection from accept to its export's release. */
  private readonly sessions = new Set<Promise<unknown>>();
  private readonly limits: TransmissionLimits;
  private readonly log: (message: string) => void;
  private readonly maxConnections: number;
  private readonly perAddress = new Map<string, number>();
  private readonly buffers: BufferPool;
  private readonly budget: BufferBudget;
  private readonly counts = { connectionLimit: 0, perAddressLimit: 0, shuttingDown: 0, idleClosed: 0, handshakeTimeouts: 0 };
  /** Kept by name for the server's lifetime, so counters survive the export being closed and reopened between connections. */
  private readonly perExport = new Map<string, ExportStats>();
  private shuttingDown = false;
  private ownReadCount = 0;

  constructor(private readonly opts: NbdServerOptions) {
    this.exports = new ExportTable(opts.source, opts.readOnly ?? false);
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.log = opts.log ?? (() => undefined);
    this.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    const total = opts.maxBufferBytes ?? DEFAULT_MAX_BUFFER;
    if (!(total >= MIN_MAX_BUFFER)) throw new RangeError(`the buffer budget must be at least ${MIN_MAX_BUFFER} bytes`);
    const floor = budgetFloor(total, this.maxConnections);
    this.budget = new BufferBudget({ total, perConnection: opts.maxConnectionBufferBytes ?? MAX_CONNECTION_BUFFER, slots: this.maxConnections, floor });
    this.buffers = new BufferPool(opts.releaseMemory);
  }

  get stats(): NbdServerStats {
    const { idleClosed, handshakeTimeouts, connectionLimit, perAddressLimit, shuttingDown } = this.counts;
    return {
      connections: this.connections.size,
      transmissions: this.transmissions.size,
      refused: { connectionLimit, perAddressLimit, shuttingDown },
      idleClosed,
      handshakeTimeouts,
      budget: this.budget.stats,
      largestConnection: Math.max(0, ...[...this.transmissions].map((t) => t.bufferedBytes)),
      buffers: this.buffers.stats,
      ownReads: this.ownReadCount,
    };
  }

  /** Every export that has had a connection, with what it served. */
  get exportStats(): ReadonlyMap<string, ExportStats> {
    return this.perExport;
  }

  /** Starts listening; resolves with the address actually bound (port 0 picks a free one). */
  async listen(address: ListenAddress): Promise<ListenAddress> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
    server.on('error', (err) => this.log(`listener error: ${err.message}`));
    if ('socket' in address) await removeStaleSocket(address.socket);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if ('socket' in address) server.listen(address.socket, done);
      else server.listen(address.port, address.host, done);
    });
    this.listeners.push(server);
    const bound = server.address();
    if (bound && typeof bound === 'object') return { host: bound.address, port: bound.port };
    return address;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  get openExports(): number {
    return this.exports.openCount;
  }
  /**
   * Ends every connection using an export, each as a server shutdown ends
   * it (requests in flight are answered, then the connection closes), and
   * resolves once the export is released; every other export goes on.
   * Returns how many connections were ended.
   */
  async disconnect(name: string): Promise<number> {
    const ending = [...this.transmissions].filter((t) => t.exportName === name);
    await Promise.all(ending.map((t) => t.shutdown()));
    for (let i = 0; i < 100 && this.exports.clients(name) > 0; i++) await new Promise((r) => setTimeout(r, 10));
    await this.exports.idle();
    return ending.length;
  }

  /**
   * Holds an export open for work the server runs on it (a migration), as
   * a connection would, without counting as a client; undefined when no
   * export answers to `name`.
   */
  async holdExport(name: string): Promise<{ export: ServedExport; release(): Promise<void> } | undefined> {
    const exp = await this.exports.acquire(name, true);
    if (!exp) return undefined;
    let released = false;
    return {
      export: exp,
      release: async () => {
        if (released) return;
        released = true;
        await this.exports.release(exp, true);
      },
    };
  }

  /** Connections using the export with this canonical name now. */
  clientsOf(name: string): number {
    return this.exports.clients(name);
  }


  /** Stops listening, lets in-flight requests finish, closes every connection and releases every export. */
  async close(): Promise<void> {
    this.shuttingDown = true;
    const closing = this.listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve())));
    // A client that never closes its side is cut off after a grace period.
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, 5000)));
    await Promise.race([Promise.all([...this.transmissions].map((t) => t.shutdown())), grace]);
    clearTimeout(timer);
    for (const s of this.connections) s.destroy();
    await Promise.all(this.sessions);
    await Promise.all(closing);
    await this.exports.idle();
  }

  private accept(accepted: net.Socket): void {
    accepted.on('error', () => accepted.destroy());
    // Refusals are counted (stats), not logged: a flood of them would flood the log.
    const address = peerAddress(accepted);
    const fromAddress = address === undefined ? 0 : (this.perAddress.get(address) ?? 0);
    const perAddressCap = this.opts.maxConnectionsPerAddress ?? DEFAULT_MAX_PER_ADDRESS;
    if (this.shuttingDown) this.counts.shuttingDown++;
    else if (this.connections.size >= this.maxConnections) this.counts.connectionLimit++;
    else if (perAddressCap > 0 && fromAddress >= perAddressCap) this.counts.perAddressLimit++;
    else {
      const socket = this.withOwnReads(accepted);
      if (socket !== accepted) socket.on('error', () => socket.destroy());
      this.connections.add(socket);
      if (address !== undefined) this.perAddress.set(address, fromAddress + 1);
      socket.on('close', () => {
        this.connections.delete(socket);
        if (address === undefined) return;
        const left = (this.perAddress.get(address) ?? 1) - 1;
        if (left > 0) this.perAddress.set(address, left);
        else this.perAddress.delete(address);
      });
      // Said now: once the socket has closed, it no longer knows its peer.
      this.startSession(socket, describe(accepted));
      return;
    }
    accepted.destroy();
  }

  /** A plain connection reads into a pooled buffer of its own (socket-reads.ts says why); TLS needs net's own reads. */
  private withOwnReads(socket: net.Socket): net.Socket {
    if ((this.opts.tls?.mode ?? 'off') !== 'off') return socket;
    const buffer = this.buffers.take(READ_BUFFER_BYTES);
    const adopted = ownReads(socket, buffer);
    if (!adopted) {
      this.buffers.give(buffer);
      return socket;
    }
    this.ownReadCount++;
    // No read lands in it once the connection is closed.
    adopted.once('close', () => {
      this.ownReadCount--;
      this.buffers.give(buffer);
    });
    return adopted;
  }

  private startSession(socket: net.Socket, peer: string): void {
    const session = this.serve(socket).catch((err: unknown) => {
      this.log(`connection from ${peer} failed: ${err instanceof Error ? err.message : String(err)}`);
      socket.destroy();
    });
    this.sessions.add(session);
    void session.finally(() => this.sessions.delete(session));
  }

  private async serve(socket: net.Socket): Promise<void> {
    const timeout = this.opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    // A deadline, not an inactivity timer: a client trickling a byte now and then must not hold its slot.
    const deadline = setTimeout(() => {
      this.counts.handshakeTimeouts++;
      socket.destroy();
    }, timeout);
    const tls = this.opts.tls ?? { mode: 'off' };
    const hs = new Handshake(socket, { source: this.opts.source, exports: this.exports, tls, isShuttingDown: () => this.shuttingDown, timeoutMs: timeout });
    let result: Awaited<ReturnType<Handshake['run']>>;
    try {
      result = await hs.run();
    } finally {
      clearTimeout(deadline);
    }
    if (!result) return;
    const name = result.export.name;
    let stats = this.perExport.get(name);
    if (!stats) this.perExport.set(name, (stats = new ExportStats(name)));
    const t = new Transmission(result.socket as NbdSocket, result.export, {
      structured: result.structured,
      metaContexts: result.metaContexts,
      limits: this.limits,
      buffers: this.buffers,
      budget: this.budget,
      idleTimeoutMs: this.opts.idleTimeoutMs ?? 0,
      onIdleClose: () => this.counts.idleClosed++,
      stats,
      log: this.log,
    });
    this.transmissions.add(t);
    stats.connections++;
    try {
      if (this.shuttingDown) void t.shutdown();
      await t.start(result.leftover);
    } finally {
      stats.connections--;
      this.transmissions.delete(t);
      // Nobody left to reuse them: pooled buffers go back to the system.
      if (this.transmissions.size === 0) this.buffers.trim();
      await this.exports.release(result.export);
    }
  }
}

/** The client's IP address (IPv4-mapped IPv6 as plain IPv4); undefined for a Unix socket. */
function peerAddress(socket: net.Socket): string | undefined {
  const a = socket.remoteAddress;
  if (a === undefined) return undefined;
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

function describe(socket: net.Socket): string {
  return socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'a unix socket';
}

/** A socket file left by a server that died is removed; a live one (something answers) is not. */
async function removeStaleSocket(path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${path} is in use by another server`);
  fs.unlinkSync(path);
}
