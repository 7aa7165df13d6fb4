import net from 'node:net';
import tls from 'node:tls';
import {
  BASE_ALLOCATION,
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
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO_BLOCK_SIZE,
  INFO_DESCRIPTION,
  INFO_EXPORT,
  INFO_NAME,
  MAX_PAYLOAD,
  NBDMAGIC,
  NBD_EINVAL,
  OPT_ABORT,
  OPT_GO,
  OPT_INFO,
  OPT_LIST,
  OPT_REPLY_MAGIC_HI,
  OPT_REPLY_MAGIC_LO,
  OPT_SET_META_CONTEXT,
  OPT_STARTTLS,
  OPT_STRUCTURED_REPLY,
  REPLY_FLAG_DONE,
  REPLY_TYPE_BLOCK_STATUS,
  REPLY_TYPE_NONE,
  REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE,
  REP_ACK,
  REP_INFO,
  REP_META_CONTEXT,
  REP_SERVER,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from './constants.js';
import type { ExportListing } from './exports.js';
import { WireReader } from './wire-reader.js';

export interface NbdClientOptions {
  host?: string;
  port?: number;
  /** Unix socket path; takes the place of host and port. */
  socket?: string;
  export?: string;
  /** Negotiate structured replies and base:allocation (default true). */
  structured?: boolean;
  tls?: {
    ca?: Buffer;
    servername?: string;
    psk?: { identity: string; key: Buffer };
  };
}

export interface ExportDetails {
  size: number;
  flags: number;
  name?: string;
  description?: string;
  blockSizes?: { minimum: number; preferred: number; maximum: number };
}

/** An error the server sent: an NBD error value during transmission, or an option reply type during the handshake. */
export class NbdClientError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = 'NbdClientError';
  }
}

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
      if (dataLength > 0) this.take(dataLength).copy(p.buf!);
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
    const payload = this.take(length);
    const p = this.pendingFor(cookie);
    this.chunk(p, type, payload);
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

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!;
  }

  private take(n: number): Buffer {
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

function u64(b: Buffer, at: number): number {
  return b.readUInt32BE(at) * 4294967296 + b.readUInt32BE(at + 4);
}

/** The client's side of option haggling. */
class ClientHandshake {
  private constructor(
    public socket: Socket,
    public reader: WireReader,
  ) {}

  static async open(opts: NbdClientOptions): Promise<ClientHandshake> {
    const socket = opts.socket !== undefined ? net.connect(opts.socket) : net.connect(opts.port ?? 10809, opts.host ?? '127.0.0.1');
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const hs = new ClientHandshake(socket, new WireReader(socket));
    const greeting = await hs.reader.read(18);
    if (greeting.readBigUInt64BE(0) !== NBDMAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('not an NBD newstyle server');
    const serverFlags = greeting.readUInt16BE(16);
    if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw new Error('the server does not speak fixed newstyle');
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES ? FLAG_C_NO_ZEROES : 0));
    socket.write(flags);
    if (opts.tls) await hs.startTls(opts);
    return hs;
  }

  send(option: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.allocUnsafe(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([h, data]));
  }

  async reply(option: number): Promise<{ type: number; data: Buffer }> {
    const h = await this.reader.read(20);
    if (h.readUInt32BE(0) !== OPT_REPLY_MAGIC_HI || h.readUInt32BE(4) !== OPT_REPLY_MAGIC_LO) throw new Error('bad option reply magic');
    if (h.readUInt32BE(8) !== option) throw new Error(`reply to option ${h.readUInt32BE(8)}, expected ${option}`);
    const length = h.readUInt32BE(16);
    if (length > 16 * 1024 * 1024) throw new Error(`option reply of ${length} bytes is too large`);
    return { type: h.readUInt32BE(12), data: length > 0 ? await this.reader.read(length) : Buffer.alloc(0) };
  }

  async simpleOption(option: number): Promise<number> {
    this.send(option);
    return (await this.reply(option)).type;
  }

  private fail(option: number, r: { type: number; data: Buffer }): never {
    throw new NbdClientError(r.type, `option ${option} refused (reply 0x${r.type.toString(16)}): ${r.data.toString('utf8')}`);
  }

  async startTls(opts: NbdClientOptions): Promise<void> {
    this.send(OPT_STARTTLS);
    const r = await this.reply(OPT_STARTTLS);
    if (r.type !== REP_ACK) this.fail(OPT_STARTTLS, r);
    this.reader.detach();
    const t = opts.tls!;
    const options: tls.ConnectionOptions = { socket: this.socket as net.Socket, minVersion: 'TLSv1.2' };
    if (t.psk) {
      const psk = t.psk;
      options.ciphers = 'PSK';
      options.maxVersion = 'TLSv1.2';
      options.checkServerIdentity = () => undefined;
      options.pskCallback = () => ({ identity: psk.identity, psk: psk.key });
    } else {
      if (t.ca) options.ca = t.ca;
      options.servername = t.servername ?? 'localhost';
    }
    const secure = tls.connect(options);
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.reader = new WireReader(secure);
  }

  async setMetaContext(name: string): Promise<number | undefined> {
    const n = Buffer.from(name, 'utf8');
    const q = Buffer.from(BASE_ALLOCATION, 'utf8');
    const data = Buffer.alloc(4 + n.length + 4 + 4 + q.length);
    data.writeUInt32BE(n.length, 0);
    n.copy(data, 4);
    data.writeUInt32BE(1, 4 + n.length);
    data.writeUInt32BE(q.length, 8 + n.length);
    q.copy(data, 12 + n.length);
    this.send(OPT_SET_META_CONTEXT, data);
    let id: number | undefined;
    for (;;) {
      const r = await this.reply(OPT_SET_META_CONTEXT);
      if (r.type === REP_META_CONTEXT && r.data.subarray(4).toString('utf8') === BASE_ALLOCATION) id = r.data.readUInt32BE(0);
      else if (r.type === REP_ACK) return id;
      else if (r.type & 0x80000000) return undefined;
    }
  }

  async infoOrGo(option: number, name: string): Promise<ExportDetails> {
    const n = Buffer.from(name, 'utf8');
    const data = Buffer.alloc(4 + n.length + 2 + 6);
    data.writeUInt32BE(n.length, 0);
    n.copy(data, 4);
    data.writeUInt16BE(3, 4 + n.length);
    data.writeUInt16BE(INFO_NAME, 6 + n.length);
    data.writeUInt16BE(INFO_DESCRIPTION, 8 + n.length);
    data.writeUInt16BE(INFO_BLOCK_SIZE, 10 + n.length);
    this.send(option, data);
    const details: ExportDetails = { size: -1, flags: 0 };
    for (;;) {
      const r = await this.reply(option);
      if (r.type === REP_ACK) break;
      if (r.type !== REP_INFO) this.fail(option, r);
      const info = r.data.readUInt16BE(0);
      if (info === INFO_EXPORT) {
        details.size = u64(r.data, 2);
        details.flags = r.data.readUInt16BE(10);
      } else if (info === INFO_NAME) details.name = r.data.subarray(2).toString('utf8');
      else if (info === INFO_DESCRIPTION) details.description = r.data.subarray(2).toString('utf8');
      else if (info === INFO_BLOCK_SIZE) {
        details.blockSizes = { minimum: r.data.readUInt32BE(2), preferred: r.data.readUInt32BE(6), maximum: r.data.readUInt32BE(10) };
      }
    }
    if (details.size < 0) throw new Error('the server accepted the export without describing it');
    if ((details.blockSizes?.maximum ?? MAX_PAYLOAD) < 512) throw new Error('the server announced an unusable maximum payload');
    return details;
  }

  async list(): Promise<ExportListing[]> {
    this.send(OPT_LIST);
    const out: ExportListing[] = [];
    for (;;) {
      const r = await this.reply(OPT_LIST);
      if (r.type === REP_ACK) return out;
      if (r.type !== REP_SERVER) this.fail(OPT_LIST, r);
      const len = r.data.readUInt32BE(0);
      const entry: ExportListing = { name: r.data.subarray(4, 4 + len).toString('utf8') };
      if (r.data.length > 4 + len) entry.description = r.data.subarray(4 + len).toString('utf8');
      out.push(entry);
    }
  }

  async abort(): Promise<void> {
    this.send(OPT_ABORT);
    await this.reply(OPT_ABORT).catch(() => undefined);
  }
}
