import net from 'node:net';
import tls from 'node:tls';
import {
  BASE_ALLOCATION,
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
  OPT_ABORT,
  OPT_LIST,
  OPT_REPLY_MAGIC_HI,
  OPT_REPLY_MAGIC_LO,
  OPT_SET_META_CONTEXT,
  OPT_STARTTLS,
  REP_ACK,
  REP_INFO,
  REP_META_CONTEXT,
  REP_SERVER,
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
    /** Client certificate and key, for servers that verify clients. */
    cert?: Buffer;
    key?: Buffer;
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

type Socket = net.Socket | tls.TLSSocket;

export function u64(b: Buffer, at: number): number {
  return b.readUInt32BE(at) * 4294967296 + b.readUInt32BE(at + 4);
}

/** The client's side of option haggling, for NbdClient. */
export class ClientHandshake {
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
      if (t.cert) options.cert = t.cert;
      if (t.key) options.key = t.key;
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
