import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { BlockDeviceError } from '../blockdev/index.js';
import { blockStatusReply } from './block-status.js';
import { classOf, type BufferPool } from './buffer-pool.js';
import type { BudgetAccount, BufferBudget } from './buffer-budget.js';
import {
  CMD_BLOCK_STATUS,
  CMD_CACHE,
  CMD_DISC,
  CMD_FLAG_DF,
  CMD_FLAG_FAST_ZERO,
  CMD_FLAG_FUA,
  CMD_FLAG_NO_HOLE,
  CMD_FLAG_REQ_ONE,
  CMD_FLUSH,
  CMD_READ,
  CMD_TRIM,
  CMD_WRITE,
  CMD_WRITE_ZEROES,
  MAX_PAYLOAD,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EPERM,
} from './constants.js';
import { messageOf, nbdErrorOf } from './errors.js';
import { coalesce } from './extent-runs.js';
import type { ServedExport } from './export-table.js';
import type { MetaContext } from './meta-contexts.js';
import type { CommandKind, CommandStats, ExportStats } from './export-stats.js';
import type { OrderedHold } from './request-order.js';
import { errorChunk, noneChunk, OFFSET_DATA_HEADER, offsetDataHeader, offsetHole, SIMPLE_HEADER, simpleReply, writeOffsetDataHeader, writeSimpleReply } from './replies.js';
import { RequestParser, type ParserSink, type Request } from './request-parser.js';
import { listenChunks, placeReads } from './socket-reads.js';

/** The socket a transmission runs on: a net.Socket or the TLSSocket wrapped around it. */
export type NbdSocket = Duplex & { cork(): void; uncork(): void; readonly writableLength: number };

export interface TransmissionOptions {
  structured: boolean;
  /** The metadata contexts the client selected for this export (none: no BLOCK_STATUS). */
  metaContexts: readonly MetaContext[];
  limits: TransmissionLimits;
  /** Pooled reply and payload buffers, shared by the server's connections. */
  buffers: BufferPool;
  /** The server-wide bound on buffered bytes; this connection opens its account there. */
  budget: BufferBudget;
  /** Close the connection after this long with nothing received, nothing delivered and nothing running (0: never). */
  idleTimeoutMs: number;
  /** Told when the idle timeout closed this connection. */
  onIdleClose: () => void;
  /** The export's counters, shared by its connections. */
  stats: ExportStats;
  log: (message: string) => void;
}

/**
 * Backpressure: reading stops while a limit is reached (here the number of
 * requests running; bytes are the budget's), so a client that pipelines
 * without end or never reads its replies cannot grow the server.
 */
export interface TransmissionLimits {
  maxRequests: number;
}

export const DEFAULT_LIMITS: TransmissionLimits = { maxRequests: 256 };

/**
 * What a request holds from the moment it is read until its reply is in the
 * kernel: its pooled buffer (READ reply, WRITE payload; the whole size class)
 * and its reply. Every request pays for a reply, so that a client sending
 * endless FLUSHes and reading nothing is bounded too.
 */
const REPLY_COST = 512;
/** The protocol asks for no more than 2^20 descriptors per block-status chunk; fewer is allowed, and bounds the reply. */
const MAX_DESCRIPTORS = 1 << 16;

/**
 * A slot's floor in a budget of `total` shared by `slots` connections: the
 * largest request size class within half the budget's share per slot, with
 * its reply, so that a request of that size always runs.
 */
const MIN_FLOOR_CLASS = 4096;
export function budgetFloor(total: number, slots: number): number {
  const share = Math.floor(total / (2 * slots));
  return share < MIN_FLOOR_CLASS ? share : 2 ** Math.floor(Math.log2(share)) + REPLY_COST;
}

export function requestCost(type: number, length: number): number {
  if ((type === CMD_READ || type === CMD_WRITE) && length > 0 && length <= MAX_PAYLOAD) return REPLY_COST + classOf(length);
  if (type === CMD_BLOCK_STATUS) return REPLY_COST + 8 * MAX_DESCRIPTORS;
  return REPLY_COST;
}

/** Reads shorter than this are sent as one data chunk: looking holes up costs more than sending a few zeroes. */
const SPARSE_READ_MIN = 64 * 1024;
const FUA = { fua: true } as const;
/** CACHE reads through in pieces of this size. */
const PREFETCH_CHUNK = 1 << 20;
const EMPTY = Buffer.alloc(0);

const COMMAND_NAMES: Record<number, string> = {
  [CMD_READ]: 'read',
  [CMD_WRITE]: 'write',
  [CMD_FLUSH]: 'flush',
  [CMD_TRIM]: 'trim',
  [CMD_CACHE]: 'cache',
  [CMD_WRITE_ZEROES]: 'write zeroes',
  [CMD_BLOCK_STATUS]: 'block status',
};

const COMMAND_KIND: Record<number, CommandKind> = {
  [CMD_READ]: 'read',
  [CMD_WRITE]: 'write',
  [CMD_FLUSH]: 'flush',
  [CMD_TRIM]: 'trim',
  [CMD_CACHE]: 'cache',
  [CMD_WRITE_ZEROES]: 'zero',
  [CMD_BLOCK_STATUS]: 'block_status',
};

const ALLOWED_FLAGS: Record<number, number> = {
  [CMD_READ]: CMD_FLAG_FUA | CMD_FLAG_DF,
  [CMD_WRITE]: CMD_FLAG_FUA,
  [CMD_FLUSH]: CMD_FLAG_FUA,
  [CMD_TRIM]: CMD_FLAG_FUA,
  [CMD_CACHE]: CMD_FLAG_FUA,
  [CMD_WRITE_ZEROES]: CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
  [CMD_BLOCK_STATUS]: CMD_FLAG_FUA | CMD_FLAG_REQ_ONE,
};

/** One request admitted for execution; it is its own hold in the export's request order. */
class Job implements OrderedHold {
  waiting = false;
  finished = false;
  failed = false;
  /** performance.now() at admission. */
  readonly admitted = performance.now();
  constructor(
    readonly conn: Transmission,
    readonly req: Request,
    readonly start: number,
    readonly end: number,
    readonly exclusive: boolean,
    /** Budget bytes held until the reply is written. */
    public cost: number,
  ) {}
  proceed(): void {
    this.conn.execute(this);
  }
}

/**
 * The transmission phase of one connection: requests are parsed as they
 * arrive, run concurrently (overlapping ones ordered by the export's range
 * lock), and replied to in completion order. Replies go out in batches
 * (cork, then one uncork: one writev for many replies, +14% measured): a
 * batch is flushed as soon as nothing else runs on the connection, which is
 * at the end of a socket read's handling when the device answered at once
 * (a page-cache hit), else on the next setImmediate turn at the latest.
 */
export class Transmission implements ParserSink {
  private readonly parser: RequestParser;
  private readonly account: BudgetAccount;
  private inflight = 0;
  /** Charged by full() for the request the parser is about to hand over. */
  private charged = 0;
  private roomCheck = false;
  private lastActivity = Date.now();
  private idleTimer: NodeJS.Timeout | undefined;
  private corked = false;
  private flushQueued = false;
  private readonly flushLater = (): void => {
    this.flushQueued = false;
    this.flush();
  };
  private stalled = false;
  private ending = false;
  private closed = false;
  private finished = false;
  private readonly whenFinished: Promise<void>;
  private resolveFinished!: () => void;

  constructor(
    private readonly socket: NbdSocket,
    private readonly exp: ServedExport,
    private readonly opts: TransmissionOptions,
  ) {
    this.whenFinished = new Promise((resolve) => (this.resolveFinished = resolve));
    const placement = placeReads(socket, (n) => {
      this.lastActivity = Date.now();
      this.parser.placedRead(n);
    });
    this.parser = new RequestParser(this, opts.buffers, placement);
    this.account = opts.budget.open(() => this.roomFreed());
  }

  /** Budget bytes this connection holds. */
  get bufferedBytes(): number {
    return this.account.bytes;
  }

  /** Starts serving; `leftover` is whatever followed the handshake in the last chunk read. */
  start(leftover: Buffer): Promise<void> {
    const s = this.socket;
    if (s.destroyed) {
      // Closed while the handshake was finishing (server shutdown, client gone).
      this.closed = true;
      this.account.close();
      this.maybeFinish();
      return this.whenFinished;
    }
    listenChunks(s, (chunk, transient) => {
      this.lastActivity = Date.now();
      this.parser.push(chunk, transient);
    });
    s.on('error', () => s.destroy());
    s.on('end', () => this.endInput());
    s.on('close', () => {
      this.closed = true;
      this.parser.stop();
      clearTimeout(this.idleTimer);
      // Replies still queued went with the socket: their bytes are free.
      this.account.close();
      this.maybeFinish();
    });
    if (this.opts.idleTimeoutMs > 0) this.armIdle(this.opts.idleTimeoutMs);
    if (leftover.length > 0) this.parser.push(leftover);
    s.resume();
    return this.whenFinished;
  }

  /** Server shutdown: stop taking requests, finish those in flight, then close. */
  /** The export this connection uses. */
  get exportName(): string {
    return this.exp.name;
  }

  shutdown(): Promise<void> {
    this.endInput();
    return this.whenFinished;
  }

  full(type: number, length: number): boolean {
    const cost = requestCost(type, length);
    const busy = this.inflight >= this.opts.limits.maxRequests || !this.account.tryCharge(cost);
    if (busy) {
      if (!this.stalled) {
        this.stalled = true;
        this.socket.pause();
      }
      return true;
    }
    this.charged = cost;
    return false;
  }

  /** The charge full() made for the request being handed over. */
  private takeCharge(): number {
    const c = this.charged;
    this.charged = 0;
    return c;
  }

  fatal(reason: string): void {
    this.opts.log(`closing connection to export '${this.exp.name}': ${reason}`);
    this.socket.destroy();
  }

  request(req: Request): void {
    const { type, flags, offset, length } = req;
    const exp = this.exp;
    const size = exp.device.size;
    if (type === CMD_DISC) {
      this.account.release(this.takeCharge());
      return this.endInput();
    }
    const allowed = ALLOWED_FLAGS[type];
    if (allowed === undefined) return this.reject(req, NBD_EINVAL, `unknown command ${type}`);
    if (flags & ~allowed || (flags & CMD_FLAG_DF && !this.opts.structured)) {
      return this.reject(req, NBD_EINVAL, `flags 0x${flags.toString(16)} are not valid for command ${type}`);
    }
    const beyond = offset + length > size;
    switch (type) {
      case CMD_READ:
        if (length > MAX_PAYLOAD) return this.reject(req, NBD_EINVAL, `read of ${length} bytes exceeds the maximum of ${MAX_PAYLOAD}`);
        if (beyond) return this.reject(req, NBD_EINVAL, `read beyond the end of the export (size ${size})`);
        return this.admit(req, false);
      case CMD_WRITE:
        if (length > MAX_PAYLOAD) return this.reject(req, NBD_EINVAL, `write of ${length} bytes exceeds the maximum of ${MAX_PAYLOAD}`);
        if (exp.readOnly) return this.reject(req, NBD_EPERM, `export '${exp.name}' is read-only`);
        if (beyond) return this.reject(req, NBD_ENOSPC, `write beyond the end of the export (size ${size})`);
        return this.admit(req, true);
      case CMD_FLUSH:
        if (offset !== 0 || length !== 0) return this.reject(req, NBD_EINVAL, 'flush offset and length must be zero');
        return this.admitUnlocked(req);
      case CMD_TRIM:
        if (exp.readOnly) return this.reject(req, NBD_EPERM, `export '${exp.name}' is read-only`);
        if (beyond) return this.reject(req, NBD_EINVAL, `trim beyond the end of the export (size ${size})`);
        return this.admit(req, true);
      case CMD_WRITE_ZEROES:
        if (exp.readOnly) return this.reject(req, NBD_EPERM, `export '${exp.name}' is read-only`);
        if (beyond) return this.reject(req, NBD_ENOSPC, `write zeroes beyond the end of the export (size ${size})`);
        // Zeroes that must stay allocated are written out: no faster than a WRITE.
        if (flags & CMD_FLAG_FAST_ZERO && flags & CMD_FLAG_NO_HOLE) return this.reject(req, NBD_ENOTSUP, 'zeroes without holes are not fast here');
        return this.admit(req, true);
      case CMD_CACHE:
        if (beyond) return this.reject(req, NBD_EINVAL, `cache beyond the end of the export (size ${size})`);
        return this.admitUnlocked(req);
      case CMD_BLOCK_STATUS:
        if (this.opts.metaContexts.length === 0) return this.reject(req, NBD_EINVAL, 'no metadata context was selected for this export');
        if (length === 0 || beyond) return this.reject(req, NBD_EINVAL, `block status range is empty or beyond the end of the export (size ${size})`);
        return this.admit(req, false);
    }
  }

  /** Runs a job whose range lock allowed it. */
  execute(job: Job): void {
    const { req } = job;
    const dev = this.exp.device;
    let p: Promise<void>;
    try {
      switch (req.type) {
        case CMD_READ:
          return this.read(job);
        case CMD_WRITE:
          p = dev.write(req.payload ?? EMPTY, req.offset, req.flags & CMD_FLAG_FUA ? FUA : undefined);
          break;
        case CMD_FLUSH:
          p = dev.flush();
          break;
        case CMD_TRIM:
          p = req.flags & CMD_FLAG_FUA ? dev.discard(req.offset, req.length).then(() => dev.flush()) : dev.discard(req.offset, req.length);
          break;
        case CMD_WRITE_ZEROES:
          p = dev.writeZeroes(req.offset, req.length, { fua: (req.flags & CMD_FLAG_FUA) !== 0, mayUnmap: (req.flags & CMD_FLAG_NO_HOLE) === 0 });
          break;
        case CMD_CACHE:
          p = this.prefetch(req.offset, req.length);
          break;
        default:
          return this.blockStatus(job);
      }
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      () => this.succeed(job, simpleReply(0, req.cookieHi, req.cookieLo)),
      (err: unknown) => this.failWith(job, err),
    );
  }

  /** Replies to a job that succeeded. Here and in failWith, a reply that cannot be built or sent breaks the connection (see broken). */
  private succeed(job: Job, reply: Buffer | Buffer[], pooled?: Buffer): void {
    try {
      this.complete(job, reply, pooled);
    } catch (err) {
      this.broken(job, err);
    }
  }

  /** Replies to a job that failed with `err`; its pooled buffer, if any, goes back first. */
  private failWith(job: Job, err: unknown, pooled?: Buffer): void {
    if (pooled) this.opts.buffers.give(pooled);
    try {
      this.fail(job, err);
    } catch (failure) {
      this.broken(job, failure);
    }
  }

  /**
   * CACHE: read the range through and throw it away, so that what sits under
   * the export holds it warm (the host's page cache, a volume's map blocks),
   * a megabyte at a time so a 32 MiB request needs no 32 MiB buffer.
   */
  private async prefetch(offset: number, length: number): Promise<void> {
    const buf = this.opts.buffers.take(Math.min(PREFETCH_CHUNK, Math.max(1, length)));
    try {
      for (let done = 0; done < length; done += PREFETCH_CHUNK) {
        const n = Math.min(PREFETCH_CHUNK, length - done);
        await this.exp.device.read(buf.subarray(0, n), offset + done);
      }
    } finally {
      this.opts.buffers.give(buf);
    }
  }

  private read(job: Job): void {
    const { req } = job;
    const dev = this.exp.device;
    if (req.length === 0) {
      return this.complete(job, this.opts.structured ? noneChunk(req.cookieHi, req.cookieLo) : simpleReply(0, req.cookieHi, req.cookieLo));
    }
    const pooled = this.opts.buffers.take(req.length);
    // A read of a whole size class (4 KiB, the usual) needs no view of its own.
    const view = pooled.length === req.length ? pooled : pooled.subarray(0, req.length);
    const sparse = this.opts.structured && dev.blockStatus !== undefined && req.length >= SPARSE_READ_MIN && !(req.flags & CMD_FLAG_DF);
    if (sparse) {
      this.readSparse(job, view).then(
        (parts) => this.succeed(job, parts, pooled),
        (err: unknown) => this.failWith(job, err, pooled),
      );
      return;
    }
    let reading: Promise<void>;
    try {
      reading = dev.read(view, req.offset);
    } catch (err) {
      reading = Promise.reject(err);
    }
    reading.then(
      () => this.sendData(job, view, pooled),
      (err: unknown) => this.failWith(job, err, pooled),
    );
  }

  private sendData(job: Job, data: Buffer, pooled: Buffer): void {
    try {
      this.complete(job, this.dataReply(job.req, data), pooled);
    } catch (err) {
      this.broken(job, err);
    }
  }

  /** The whole reply to a read of `data` (a pooled buffer's start): the header goes in the room in front of it. */
  private dataReply(req: Request, data: Buffer): Buffer {
    if (!this.opts.structured) {
      const reply = this.opts.buffers.withFront(data, SIMPLE_HEADER);
      writeSimpleReply(reply, 0, req.cookieHi, req.cookieLo);
      return reply;
    }
    const reply = this.opts.buffers.withFront(data, OFFSET_DATA_HEADER);
    writeOffsetDataHeader(reply, true, req.cookieHi, req.cookieLo, req.offset, req.length);
    return reply;
  }

  /** Reads only the data runs; zero runs go out as OFFSET_HOLE chunks. Everything is read before anything is sent. */
  private async readSparse(job: Job, view: Buffer): Promise<Buffer[]> {
    const { req } = job;
    const dev = this.exp.device;
    const runs = coalesce(await dev.blockStatus!(req.offset, req.length), req.offset, req.length, (e) => e.zero, true);
    await Promise.all(runs.filter((r) => !r.zero).map((r) => dev.read(view.subarray(r.offset - req.offset, r.offset - req.offset + r.length), r.offset)));
    const parts: Buffer[] = [];
    runs.forEach((r, i) => {
      const last = i === runs.length - 1;
      if (r.zero) parts.push(offsetHole(last, req.cookieHi, req.cookieLo, r.offset, r.length));
      else parts.push(offsetDataHeader(last, req.cookieHi, req.cookieLo, r.offset, r.length), view.subarray(r.offset - req.offset, r.offset - req.offset + r.length));
    });
    return parts;
  }

  private blockStatus(job: Job): void {
    const { req } = job;
    blockStatusReply(this.exp.device, this.opts.metaContexts, req.offset, req.length, (req.flags & CMD_FLAG_REQ_ONE) !== 0, MAX_DESCRIPTORS, req.cookieHi, req.cookieLo).then(
      (chunks) => this.succeed(job, chunks),
      (err: unknown) => this.failWith(job, err),
    );
  }

  private reject(req: Request, error: number, message: string): void {
    if (req.pooled) this.opts.buffers.give(req.pooled);
    const counted = this.counted(req.type);
    if (counted) {
      counted.ops++;
      counted.errors++;
    }
    this.send(this.errorReply(req, error, message), this.takeCharge());
  }

  private errorReply(req: Request, error: number, message: string): Buffer {
    return this.opts.structured ? errorChunk(error, message, req.cookieHi, req.cookieLo) : simpleReply(error, req.cookieHi, req.cookieLo);
  }

  private admit(req: Request, exclusive: boolean): void {
    const job = new Job(this, req, req.offset, req.offset + req.length, exclusive, this.takeCharge());
    this.inflight++;
    if (this.exp.order.acquire(job)) this.execute(job);
  }

  private admitUnlocked(req: Request): void {
    const job = new Job(this, req, 0, 0, false, this.takeCharge());
    this.inflight++;
    this.execute(job);
  }

  private fail(job: Job, err: unknown): void {
    const { req } = job;
    job.failed = true;
    const error = nbdErrorOf(err);
    this.opts.log(`export '${this.exp.name}': command ${req.type} at ${req.offset}+${req.length} failed: ${messageOf(err)}`);
    // The full message names server paths; the client learns what failed and where, the log the rest.
    const code = err instanceof BlockDeviceError ? err.code : 'EIO';
    this.complete(job, this.errorReply(req, error, `export '${this.exp.name}': ${COMMAND_NAMES[req.type] ?? 'command'} at offset ${req.offset} length ${req.length} failed (${code})`));
  }

  private complete(job: Job, reply: Buffer | Buffer[], pooled?: Buffer): void {
    this.settle(job);
    this.lastActivity = Date.now();
    this.send(reply, job.cost, pooled);
    job.cost = 0;
    this.unstall();
    this.maybeFinish();
  }

  private settle(job: Job): void {
    if (job.finished) return;
    job.finished = true;
    const counted = this.counted(job.req.type);
    if (counted) {
      counted.ops++;
      if (job.failed) counted.errors++;
      else if (job.req.type !== CMD_FLUSH) counted.bytes += job.req.length;
      counted.observe((performance.now() - job.admitted) / 1000);
    }
    this.exp.order.release(job);
    if (job.req.pooled) this.opts.buffers.give(job.req.pooled);
    this.inflight--;
  }

  /**
   * A reply could not even be built (a device answered nonsense, a bug): the
   * reply stream can no longer be trusted, so this connection ends. The
   * server, and every other connection, goes on.
   */
  private broken(job: Job, err: unknown): void {
    this.opts.log(`export '${this.exp.name}': closing a connection after an internal error: ${messageOf(err)}`);
    job.failed = true;
    this.settle(job);
    this.account.release(job.cost);
    this.socket.destroy();
    this.maybeFinish();
  }

  /**
   * Writes a reply; `cost` (what the request was charged) stays charged until
   * the kernel has the reply, which is when the client's unread replies stop
   * costing us memory.
   */
  private send(reply: Buffer | Buffer[], cost: number, pooled?: Buffer): void {
    const s = this.socket;
    if (this.closed || s.destroyed) {
      if (pooled) this.opts.buffers.give(pooled);
      this.account.release(cost);
      return;
    }
    const single = !Array.isArray(reply);
    // Alone and with nothing else running, a reply goes straight out: one write, no batch to gather.
    const alone = single && this.inflight === 0 && !this.corked;
    if (!alone && !this.corked) {
      this.corked = true;
      s.cork();
    }
    let bytes = 0;
    if (single) bytes = reply.length;
    else for (const p of reply) bytes += p.length;
    // A reply larger than its charge (a long error message) is charged in full: the bound stays true.
    const held = Math.max(cost, bytes);
    if (held > cost) this.account.force(held - cost);
    const written = (): void => {
      if (pooled) this.opts.buffers.give(pooled);
      this.lastActivity = Date.now();
      this.account.release(held);
      this.unstall();
    };
    if (single) s.write(reply, written);
    else {
      const last = reply.length - 1;
      for (let i = 0; i < last; i++) s.write(reply[i]);
      s.write(reply[last], written);
    }
    if (!this.corked) return;
    if (this.inflight === 0) this.flush();
    else if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(this.flushLater);
    }
  }

  /** Sends the batch of replies corked so far. */
  private flush(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  /** The counters of a command type; undefined for one the protocol does not know (refused, not counted). */
  private counted(type: number): CommandStats | undefined {
    const kind = COMMAND_KIND[type];
    return kind === undefined ? undefined : this.opts.stats.commands[kind];
  }

  /** Another connection freed shared room: try again, on a later turn (the budget must not be re-entered). */
  private roomFreed(): void {
    if (this.roomCheck) return;
    this.roomCheck = true;
    setImmediate(() => {
      this.roomCheck = false;
      this.unstall();
    });
  }

  private unstall(): void {
    if (!this.stalled || this.ending || this.closed) return;
    this.stalled = false;
    this.parser.resume();
    // The parser may have stopped again at once; the socket stays paused then.
    if (!this.stalled) this.socket.resume();
  }

  /** No more requests will be read (DISC, end of input, shutdown); close once in-flight ones are answered. */
  private endInput(): void {
    this.ending = true;
    this.parser.stop();
    this.account.stopWaiting();
    this.maybeFinish();
  }

  /** Closes a connection on which nothing at all has happened for the idle timeout. */
  private armIdle(ms: number): void {
    this.idleTimer = setTimeout(() => {
      if (this.closed) return;
      const now = Date.now();
      // A request the device is still working on is not idleness.
      if (this.inflight > 0) this.lastActivity = now;
      const quiet = now - this.lastActivity;
      if (quiet < this.opts.idleTimeoutMs) return this.armIdle(this.opts.idleTimeoutMs - quiet);
      this.opts.log(`closing a connection to export '${this.exp.name}' idle for ${Math.round(quiet / 1000)} s`);
      this.opts.onIdleClose();
      this.socket.destroy();
    }, ms);
    this.idleTimer.unref();
  }

  private maybeFinish(): void {
    if (this.inflight > 0) return;
    if (this.ending && !this.closed) {
      this.flush();
      this.socket.end();
      lingerThenDestroy(this.socket);
    }
    if (this.closed && !this.finished) {
      this.finished = true;
      this.resolveFinished();
    }
  }
}

/**
 * After our side is closed, a peer that never closes its own would hold a
 * connection slot forever: it gets a moment to read the last replies, then
 * the socket goes.
 */
export function lingerThenDestroy(socket: Duplex): void {
  socket.once('finish', () => setTimeout(() => socket.destroy(), 2000).unref());
}
