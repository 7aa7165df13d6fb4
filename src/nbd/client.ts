import type net from 'node:net';
import type tls from 'node:tls';
import { ClientHandshake, NbdClientError, u64, type ExportDetails, type NbdClientOptions } from './client-handshake.js';
import {
  CMD_BLOCK_STATUS,
  CMD_CACHE,
  CMD_DISC,
  CMD_FLAG_FAST_ZERO,
  CMD_FLAG_FUA,
  CMD_FLAG_NO_HOLE,
  CMD_FLAG_REQ_ONE,
  CMD_FLUSH,
  CMD_READ,
  CMD_TRIM,
  CMD_WRITE,
  CMD_WRITE_ZEROES,
  NBD_EINVAL,
  OPT_GO,
  OPT_INFO,
  OPT_STRUCTURED_REPLY,
  REPLY_FLAG_DONE,
  REPLY_TYPE_BLOCK_STATUS,
  REPLY_TYPE_NONE,
  REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE,
  REP_ACK,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from './constants.js';
import type { ExportListing } from './exports.js';

export { NbdClientError, type ExportDetails, type NbdClientOptions } from './client-handshake.js';




export interface BlockStatusDescriptor {
  length: number;
  flags: number;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  buf: Buffer | undefined;
  descriptors: BlockStatusDescriptor[];
  error: NbdClientError | undefined;
  resolve: (value: Pending) => void;
  reject: (err: Error) => void;
}

type Socket = net.Socket | tls.TLSSocket;

/**
 * A small NBD client: fixed newstyle handshake (TLS optional), structured
 * replies, base:allocation, and pipelined requests. Used by the tests and by
 * storage migration; it trusts the server no more than it must.
 */
export class NbdClient {
  readonly details: ExportDetails;
  readonly structured: boolean;
  readonly metaContextId: number | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextCookie = 1;
  private chunks: Buffer[] = [];
  private available = 0;
  private closedError: Error | undefined;
  private idleWaiters: (() => void)[] = [];

  private constructor(
    private readonly socket: Socket,
    details: ExportDetails,
    structured: boolean,
    metaContextId: number | undefined,
    leftover: Buffer,
  ) {
    this.details = details;
    this.structured = structured;
    this.metaContextId = metaContextId;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.failAll(err));
    socket.on('close', () => this.failAll(new Error('the server closed the connection')));
    socket.resume();
    if (leftover.length > 0) this.onData(leftover);
  }

  get size(): number {
    return this.details.size;
  }

  static async connect(opts: NbdClientOptions): Promise<NbdClient> {
    const hs = await ClientHandshake.open(opts);
    try {
      const structured = opts.structured !== false && (await hs.simpleOption(OPT_STRUCTURED_REPLY)) === REP_ACK;
      let metaContextId: number | undefined;
      if (structured) metaContextId = await hs.setMetaContext(opts.export ?? '');
      const details = await hs.infoOrGo(OPT_GO, opts.export ?? '');
      return new NbdClient(hs.socket, details, structured, metaContextId, hs.reader.detach());
    } catch (err) {
      hs.socket.destroy();
      throw err;
    }
  }

  /** NBD_OPT_LIST, then NBD_OPT_ABORT. */
  static async list(opts: NbdClientOptions): Promise<ExportListing[]> {
    const hs = await ClientHandshake.open(opts);
    try {
      const listing = await hs.list();
      await hs.abort();
      return listing;
    } finally {
      hs.socket.destroy();
    }
  }

  /** NBD_OPT_INFO for one export, then NBD_OPT_ABORT. */
  static async info(opts: NbdClientOptions): Promise<ExportDetails> {
    const hs = await ClientHandshake.open(opts);
    try {
      const details = await hs.infoOrGo(OPT_INFO, opts.export ?? '');
      await hs.abort();
      return details;
    } finally {
      hs.socket.destroy();
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.request(CMD_READ, 0, offset, length, undefined, buf);
    return buf;
  }

  async readInto(buf: Buffer, offset: number): Promise<void> {
    await this.request(CMD_READ, 0, offset, buf.length, undefined, buf);
  }

  async write(data: Uint8Array, offset: number, opts: { fua?: boolean } = {}): Promise<void> {
    await this.request(CMD_WRITE, opts.fua ? CMD_FLAG_FUA : 0, offset, data.length, data);
  }

  async flush(): Promise<void> {
    await this.request(CMD_FLUSH, 0, 0, 0);
  }

  async trim(offset: number, length: number, opts: { fua?: boolean } = {}): Promise<void> {
    await this.request(CMD_TRIM, opts.fua ? CMD_FLAG_FUA : 0, offset, length);
  }

  async writeZeroes(offset: number, length: number, opts: { fua?: boolean; noHole?: boolean; fastZero?: boolean } = {}): Promise<void> {
    const flags = (opts.fua ? CMD_FLAG_FUA : 0) | (opts.noHole ? CMD_FLAG_NO_HOLE : 0) | (opts.fastZero ? CMD_FLAG_FAST_ZERO : 0);
    await this.request(CMD_WRITE_ZEROES, flags, offset, length);
  }

  async cache(offset: number, length: number): Promise<void> {
    await this.request(CMD_CACHE, 0, offset, length);
  }

  async blockStatus(offset: number, length: number, opts: { reqOne?: boolean } = {}): Promise<BlockStatusDescriptor[]> {
    const p = await this.request(CMD_BLOCK_STATUS, opts.reqOne ? CMD_FLAG_REQ_ONE : 0, offset, length);
    return p.descriptors;
  }

  /** Any command, flags as given: for tests of how a server answers what a polite client never sends. */
  async raw(type: number, flags: number, offset: number, length: number, payload?: Uint8Array): Promise<void> {
    const buf = type === CMD_READ ? Buffer.alloc(length) : undefined;
    await this.request(type, flags, offset, length, payload, buf);
  }

  /** Soft disconnect: NBD_CMD_DISC once every reply is in, then close. */
  async disconnect(): Promise<void> {
    if (this.pending.size > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (this.socket.destroyed) return;
    this.socket.write(requestHeader(CMD_DISC, 0, 0, 0, 0));
    await new Promise<void>((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end();
    });
  }

  /** Hard disconnect, as a vanishing client would. */
  destroy(): void {
    this.socket.destroy();
  }

  private request(type: number, flags: number, offset: number, length: number, payload?: Uint8Array, buf?: Buffer): Promise<Pending> {
    if (this.closedError) return Promise.reject(this.closedError);
    const cookie = this.nextCookie++;
    return new Promise<Pending>((resolve, reject) => {
      this.pending.set(cookie, { type, offset, length, buf, descriptors: [], error: undefined, resolve, reject });
      this.socket.write(requestHeader(type, flags, cookie, offset, length));
      if (payload && payload.length > 0) this.socket.write(payload);
    }).then((p) => {
      if (p.error) throw p.error;
      return p;
    });
  }

  private onData(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.available += chunk.length;
    try {
      while (this.parseOne());
    } catch (err) {
      this.socket.destroy();
      this.failAll(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Parses one reply if it is complete in the buffer. */
  private parseOne(): boolean {
    if (this.available < 4) return false;
    const head = this.peek(Math.min(this.available, 20));
    const magic = head.readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      if (this.available < 16) return false;
      const error = head.readUInt32BE(4);
      const cookie = head.readUInt32BE(12);
      const p = this.pendingFor(cookie);
      const dataLength = p.type === CMD_READ && error === 0 ? p.length : 0;
      if (this.available < 16 + dataLength) return false;
      this.take(16);
      if (dataLength > 0) this.takeInto(p.buf!, 0, dataLength);
      if (error !== 0) p.error = new NbdClientError(error, `server error ${error}`);
      this.settle(cookie, p);
      return true;
    }
    if (magic !== STRUCTURED_REPLY_MAGIC) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    if (this.available < 20) return false;
    const flags = head.readUInt16BE(4);
    const type = head.readUInt16BE(6);
    const cookie = head.readUInt32BE(12);
    const length = head.readUInt32BE(16);
    if (this.available < 20 + length) return false;
    this.take(20);
    const p = this.pendingFor(cookie);
    if (type === REPLY_TYPE_OFFSET_DATA && length >= 8) {
      // The data goes from the socket's chunks straight into the read's buffer: one copy.
      const at = u64(this.take(8), 0) - p.offset;
      if (p.type !== CMD_READ || at < 0 || at + length - 8 > p.length) throw new Error('data chunk outside the read');
      this.takeInto(p.buf!, at, length - 8);
    } else {
      this.chunk(p, type, this.take(length));
    }
    if (flags & REPLY_FLAG_DONE) this.settle(cookie, p);
    return true;
  }

  private chunk(p: Pending, type: number, payload: Buffer): void {
    if (type & 0x8000) {
      const errno = payload.length >= 4 ? payload.readUInt32BE(0) : NBD_EINVAL;
      const msgLength = payload.length >= 6 ? payload.readUInt16BE(4) : 0;
      p.error ??= new NbdClientError(errno, payload.subarray(6, 6 + msgLength).toString('utf8') || `server error ${errno}`);
      return;
    }
    switch (type) {
      case REPLY_TYPE_NONE:
        return;
      case REPLY_TYPE_OFFSET_DATA: {
        const at = u64(payload, 0) - p.offset;
        const data = payload.subarray(8);
        if (p.type !== CMD_READ || at < 0 || at + data.length > p.length) throw new Error('data chunk outside the read');
        data.copy(p.buf!, at);
        return;
      }
      case REPLY_TYPE_OFFSET_HOLE: {
        const at = u64(payload, 0) - p.offset;
        const len = payload.readUInt32BE(8);
        if (p.type !== CMD_READ || at < 0 || at + len > p.length || len === 0) throw new Error('hole chunk outside the read');
        p.buf!.fill(0, at, at + len);
        return;
      }
      case REPLY_TYPE_BLOCK_STATUS:
        for (let i = 4; i + 8 <= payload.length; i += 8) p.descriptors.push({ length: payload.readUInt32BE(i), flags: payload.readUInt32BE(i + 4) });
        return;
      default:
        throw new Error(`unknown reply chunk type ${type}`);
    }
  }

  private pendingFor(cookie: number): Pending {
    const p = this.pending.get(cookie);
    if (!p) throw new Error(`reply for unknown cookie ${cookie}`);
    return p;
  }

  private settle(cookie: number, p: Pending): void {
    this.pending.delete(cookie);
    p.resolve(p);
    if (this.pending.size === 0) this.wakeIdle();
  }

  private failAll(err: Error): void {
    this.closedError ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.wakeIdle();
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** The first chunk, made to hold at least `n` bytes by joining only as many chunks as that takes (not all that arrived). */
  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    let len = 0;
    let k = 0;
    while (len < n && k < this.chunks.length) len += this.chunks[k++]!.length;
    const joined = Buffer.concat(this.chunks.slice(0, k), len);
    this.chunks.splice(0, k, joined);
    return joined;
  }

  /** Copies the next `n` bytes into `dst` at `at` and drops them. */
  private takeInto(dst: Buffer, at: number, n: number): void {
    this.available -= n;
    while (n > 0) {
      const c = this.chunks[0]!;
      const k = Math.min(n, c.length);
      c.copy(dst, at, 0, k);
      at += k;
      n -= k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
  }

  private take(n: number): Buffer {
    // A reply that ends exactly at the end of what arrived leaves nothing to peek at: an empty chunk takes nothing.
    if (n === 0) return Buffer.alloc(0);
    const first = this.peek(n);
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.available -= n;
    return out;
  }
}

function requestHeader(type: number, flags: number, cookie: number, offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(28);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeUInt32BE(0, 8);
  b.writeUInt32BE(cookie, 12);
  b.writeUInt32BE(Math.floor(offset / 4294967296), 16);
  b.writeUInt32BE(offset % 4294967296, 20);
  b.writeUInt32BE(length, 24);
  return b;
}
