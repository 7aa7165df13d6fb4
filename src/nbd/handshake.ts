import type net from 'node:net';
import type tls from 'node:tls';
import {
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_CAN_MULTI_CONN,
  FLAG_FIXED_NEWSTYLE,
  FLAG_HAS_FLAGS,
  FLAG_NO_ZEROES,
  FLAG_READ_ONLY,
  FLAG_SEND_CACHE,
  FLAG_SEND_DF,
  FLAG_SEND_FAST_ZERO,
  FLAG_SEND_FLUSH,
  FLAG_SEND_FUA,
  FLAG_SEND_TRIM,
  FLAG_SEND_WRITE_ZEROES,
  IHAVEOPT,
  INFO_BLOCK_SIZE,
  INFO_DESCRIPTION,
  INFO_NAME,
  MAX_PAYLOAD,
  NBDMAGIC,
  OPT_ABORT,
  OPT_EXPORT_NAME,
  OPT_GO,
  OPT_INFO,
  OPT_LIST,
  OPT_LIST_META_CONTEXT,
  OPT_SET_META_CONTEXT,
  OPT_STARTTLS,
  OPT_STRUCTURED_REPLY,
  REP_ACK,
  REP_ERR_INVALID,
  REP_ERR_POLICY,
  REP_ERR_SHUTDOWN,
  REP_ERR_TLS_REQD,
  REP_ERR_TOO_BIG,
  REP_ERR_UNKNOWN,
  REP_ERR_UNSUP,
  REP_INFO,
  REP_META_CONTEXT,
  REP_SERVER,
} from './constants.js';
import type { ExportTable, ServedExport } from './export-table.js';
import type { ExportSource } from './exports.js';
import { matchMetaContexts, type MetaContext } from './meta-contexts.js';
import { infoBlockSize, infoExport, infoString, metaContextEntry, OptionError, optionReply, parseGo, parseMetaContext, readString, serverEntry } from './options.js';
import { upgradeToTls, type TlsSetup } from './tls.js';
import { lingerThenDestroy } from './transmission.js';
import { ConnectionClosed, WireReader } from './wire-reader.js';

/** Option data longer than this is skipped unread and refused: no option needs more. */
const MAX_OPTION_DATA = 64 * 1024;
/** A client still haggling after this many options is not going to settle. */
const MAX_OPTIONS = 1024;

export interface HandshakeContext {
  source: ExportSource;
  exports: ExportTable;
  tls: TlsSetup;
  isShuttingDown: () => boolean;
  timeoutMs: number;
}

export interface Negotiated {
  socket: net.Socket | tls.TLSSocket;
  leftover: Buffer;
  export: ServedExport;
  structured: boolean;
  /** What the last SET_META_CONTEXT selected, when it named the export transmission uses. */
  metaContexts: readonly MetaContext[];
}

/** The transmission flags an export is announced with. */
export function transmissionFlags(exp: ServedExport, structured: boolean): number {
  let flags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_CACHE | FLAG_CAN_MULTI_CONN;
  if (structured) flags |= FLAG_SEND_DF;
  if (exp.readOnly) flags |= FLAG_READ_ONLY;
  else flags |= FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO;
  return flags;
}

/** Minimum 1 (any byte offset works), preferred the device's (clamped to what the protocol allows), maximum 32 MiB. */
export function blockSizes(exp: ServedExport): [number, number, number] {
  const pref = Math.min(Math.max(exp.device.preferredBlockSize, 512), MAX_PAYLOAD);
  return [1, 2 ** Math.floor(Math.log2(pref)), MAX_PAYLOAD];
}

/**
 * Fixed newstyle negotiation for one connection. Resolves with what the client
 * chose once transmission starts, or undefined when the session ended during
 * haggling (ABORT, a refused EXPORT_NAME, a broken client).
 */
export class Handshake {
  private socket: net.Socket | tls.TLSSocket;
  private reader: WireReader;
  private noZeroes = false;
  private tlsUp = false;
  private structured = false;
  private metaExport: string | undefined;
  private metaSelected: readonly MetaContext[] = [];

  constructor(
    private readonly raw: net.Socket,
    private readonly ctx: HandshakeContext,
  ) {
    this.socket = raw;
    this.reader = new WireReader(raw);
  }

  async run(): Promise<Negotiated | undefined> {
    try {
      return await this.negotiate();
    } catch {
      this.socket.destroy();
      return undefined;
    }
  }

  private async negotiate(): Promise<Negotiated | undefined> {
    const greeting = Buffer.allocUnsafe(18);
    greeting.writeBigUInt64BE(NBDMAGIC, 0);
    greeting.writeBigUInt64BE(IHAVEOPT, 8);
    greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    this.socket.write(greeting);
    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if (clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) return this.drop();
    this.noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;

    for (let count = 0; count < MAX_OPTIONS; count++) {
      const header = await this.reader.read(16);
      if (header.readBigUInt64BE(0) !== IHAVEOPT) return this.drop();
      const option = header.readUInt32BE(8);
      const length = header.readUInt32BE(12);
      if (length > MAX_OPTION_DATA) {
        await this.reader.skip(length);
        if (option === OPT_EXPORT_NAME) return this.drop();
        this.reply(option, REP_ERR_TOO_BIG, `option data of ${length} bytes is too large`);
        continue;
      }
      const data = length > 0 ? await this.reader.read(length) : Buffer.alloc(0);
      const done = await this.option(option, data);
      if (done !== 'continue') return done;
    }
    return this.drop();
  }

  /** Handles one option; 'continue' keeps haggling. */
  private async option(option: number, data: Buffer): Promise<Negotiated | undefined | 'continue'> {
    const forced = this.ctx.tls.mode === 'require' && !this.tlsUp;
    if (option === OPT_ABORT) {
      this.socket.end(optionReply(option, REP_ACK));
      lingerThenDestroy(this.socket);
      this.reader.detach();
      return undefined;
    }
    if (option === OPT_EXPORT_NAME) {
      if (forced || this.ctx.isShuttingDown()) return this.drop();
      return this.exportName(data);
    }
    if (option === OPT_STARTTLS) return this.startTls(data);
    if (forced) return this.reply(option, REP_ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first');
    if (this.ctx.isShuttingDown()) return this.reply(option, REP_ERR_SHUTDOWN, 'the server is shutting down');
    try {
      switch (option) {
        case OPT_LIST:
          return await this.list(data);
        case OPT_INFO:
        case OPT_GO:
          return await this.infoOrGo(option, data);
        case OPT_STRUCTURED_REPLY:
          if (data.length > 0) return this.reply(option, REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          this.structured = true;
          return this.reply(option, REP_ACK);
        case OPT_LIST_META_CONTEXT:
        case OPT_SET_META_CONTEXT:
          return await this.metaContext(option, data);
        default:
          return this.reply(option, REP_ERR_UNSUP, `option ${option} is not supported`);
      }
    } catch (err) {
      if (err instanceof OptionError) return this.reply(option, REP_ERR_INVALID, err.message);
      throw err;
    }
  }

  private async list(data: Buffer): Promise<'continue'> {
    if (data.length > 0) return this.reply(OPT_LIST, REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
    for (const e of await this.ctx.source.list()) this.socket.write(optionReply(OPT_LIST, REP_SERVER, serverEntry(e.name, e.description)));
    return this.reply(OPT_LIST, REP_ACK);
  }

  private async infoOrGo(option: number, data: Buffer): Promise<Negotiated | 'continue'> {
    const { name, infos } = parseGo(data);
    let exp: ServedExport | undefined;
    try {
      exp = await this.ctx.exports.acquire(name);
    } catch (err) {
      return this.reply(option, REP_ERR_UNKNOWN, `export '${name}' cannot be opened: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (!exp) return this.reply(option, REP_ERR_UNKNOWN, `no export named '${name}'`);
    const out = this.socket;
    out.write(optionReply(option, REP_INFO, infoExport(exp.device.size, transmissionFlags(exp, this.structured))));
    if (infos.includes(INFO_NAME)) out.write(optionReply(option, REP_INFO, infoString(INFO_NAME, exp.name)));
    if (infos.includes(INFO_DESCRIPTION) && exp.description !== undefined) out.write(optionReply(option, REP_INFO, infoString(INFO_DESCRIPTION, exp.description)));
    // Always sent: it costs nothing, and it tells every client the 32 MiB limit.
    out.write(optionReply(option, REP_INFO, infoBlockSize(INFO_BLOCK_SIZE, ...blockSizes(exp))));
    out.write(optionReply(option, REP_ACK));
    if (option === OPT_INFO) {
      await this.ctx.exports.release(exp);
      return 'continue';
    }
    return this.enter(exp, name);
  }

  private async exportName(data: Buffer): Promise<Negotiated | undefined> {
    let exp: ServedExport | undefined;
    let name = '';
    try {
      name = readString(data, 0, data.length);
      exp = await this.ctx.exports.acquire(name);
    } catch {
      exp = undefined;
    }
    // EXPORT_NAME cannot carry an error: an unknown name can only end the session.
    if (!exp) return this.drop();
    const b = Buffer.alloc(this.noZeroes ? 10 : 134);
    b.writeUInt32BE(Math.floor(exp.device.size / 4294967296), 0);
    b.writeUInt32BE(exp.device.size % 4294967296, 4);
    b.writeUInt16BE(transmissionFlags(exp, this.structured), 8);
    this.socket.write(b);
    return this.enter(exp, name);
  }

  private enter(exp: ServedExport, requested: string): Negotiated {
    const leftover = this.reader.detach();
    const metaContexts = this.metaExport === requested ? this.metaSelected : [];
    return { socket: this.socket, leftover, export: exp, structured: this.structured, metaContexts };
  }

  private async metaContext(option: number, data: Buffer): Promise<'continue'> {
    if (!this.structured) return this.reply(option, REP_ERR_INVALID, 'negotiate structured replies first');
    const setting = option === OPT_SET_META_CONTEXT;
    // SET replaces the selection even when it fails.
    if (setting) this.metaSelected = [];
    const { name, queries } = parseMetaContext(data);
    if ((await this.ctx.source.resolve(name)) === undefined) return this.reply(option, REP_ERR_UNKNOWN, `no export named '${name}'`);
    const matches = matchMetaContexts(queries, !setting);
    // A listing's ids are reserved (the protocol asks for 0); a selection's are what block status replies carry.
    for (const c of matches) this.socket.write(optionReply(option, REP_META_CONTEXT, metaContextEntry(setting ? c.id : 0, c.name)));
    if (setting) {
      this.metaSelected = matches;
      this.metaExport = name;
    }
    return this.reply(option, REP_ACK);
  }

  private async startTls(data: Buffer): Promise<'continue' | undefined> {
    if (this.ctx.tls.mode === 'off') return this.reply(OPT_STARTTLS, REP_ERR_POLICY, 'TLS is not enabled on this server');
    if (data.length > 0) return this.reply(OPT_STARTTLS, REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
    if (this.tlsUp) return this.reply(OPT_STARTTLS, REP_ERR_INVALID, 'TLS is already running');
    const leftover = this.reader.detach();
    // The client waits for the ACK before its ClientHello; anything sooner is not TLS.
    if (leftover.length > 0) return this.drop();
    await new Promise<void>((resolve, reject) => this.raw.write(optionReply(OPT_STARTTLS, REP_ACK), (err) => (err ? reject(new ConnectionClosed()) : resolve())));
    try {
      this.socket = await upgradeToTls(this.raw, this.ctx.tls, this.ctx.timeoutMs);
    } catch {
      this.raw.destroy();
      throw new ConnectionClosed('TLS handshake failed');
    }
    this.reader = new WireReader(this.socket);
    this.tlsUp = true;
    // Nothing negotiated in plain text survives the upgrade.
    this.structured = false;
    this.metaSelected = [];
    this.metaExport = undefined;
    return 'continue';
  }

  private reply(option: number, type: number, message?: string): 'continue' {
    this.socket.write(optionReply(option, type, message === undefined ? undefined : Buffer.from(message, 'utf8')));
    return 'continue';
  }

  private drop(): undefined {
    this.reader.detach();
    this.socket.destroy();
    return undefined;
  }
}
