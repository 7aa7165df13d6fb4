import fs from 'node:fs';
import net from 'node:net';
import { ExportTable } from './export-table.js';
import type { ExportSource } from './exports.js';
import { Handshake } from './handshake.js';
import type { TlsSetup } from './tls.js';
import { DEFAULT_LIMITS, Transmission, type NbdSocket, type TransmissionLimits } from './transmission.js';

export interface NbdServerOptions {
  source: ExportSource;
  /** Serve every export read-only, whatever the source says. */
  readOnly?: boolean;
  tls?: TlsSetup;
  /** Connections beyond this are closed at once. */
  maxConnections?: number;
  limits?: Partial<TransmissionLimits>;
  /** A client must finish the handshake (or TLS) within this time. */
  handshakeTimeoutMs?: number;
  log?: (message: string) => void;
}

export type ListenAddress = { host: string; port: number } | { socket: string };

const DEFAULT_MAX_CONNECTIONS = 128;

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
  private shuttingDown = false;

  constructor(private readonly opts: NbdServerOptions) {
    this.exports = new ExportTable(opts.source, opts.readOnly ?? false);
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.log = opts.log ?? (() => undefined);
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

  private accept(socket: net.Socket): void {
    socket.on('error', () => socket.destroy());
    if (this.shuttingDown || this.connections.size >= (this.opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS)) {
      this.log(`refusing a connection from ${describe(socket)}: ${this.shuttingDown ? 'shutting down' : 'connection limit reached'}`);
      socket.destroy();
      return;
    }
    this.connections.add(socket);
    socket.on('close', () => this.connections.delete(socket));
    const session = this.serve(socket).catch((err: unknown) => {
      this.log(`connection from ${describe(socket)} failed: ${err instanceof Error ? err.message : String(err)}`);
      socket.destroy();
    });
    this.sessions.add(session);
    void session.finally(() => this.sessions.delete(session));
  }

  private async serve(socket: net.Socket): Promise<void> {
    const timeout = this.opts.handshakeTimeoutMs ?? 30_000;
    socket.setTimeout(timeout, () => socket.destroy());
    const tls = this.opts.tls ?? { mode: 'off' };
    const hs = new Handshake(socket, { source: this.opts.source, exports: this.exports, tls, isShuttingDown: () => this.shuttingDown, timeoutMs: timeout });
    const result = await hs.run();
    socket.setTimeout(0);
    if (!result) return;
    const t = new Transmission(result.socket as NbdSocket, result.export, {
      structured: result.structured,
      metaContextId: result.metaContextId,
      limits: this.limits,
      log: this.log,
    });
    this.transmissions.add(t);
    try {
      if (this.shuttingDown) void t.shutdown();
      await t.start(result.leftover);
    } finally {
      this.transmissions.delete(t);
      await this.exports.release(result.export);
    }
  }
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
