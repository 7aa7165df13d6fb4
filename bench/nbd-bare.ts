import fs from 'node:fs';
import net from 'node:net';

/**
 * The smallest NBD server a Node programmer would write, for the benchmark's
 * `node-bare` line: what Node and the kernel can do on this machine with no
 * storage format at all. Fixed newstyle handshake (EXPORT_NAME, INFO, GO,
 * LIST, ABORT), simple replies only, one raw file read and written with
 * positioned synchronous calls on the main thread; replies of one turn of
 * the event loop go out in one writev (corked until setImmediate), write
 * payloads go to the file straight from the socket's chunks.
 * The protocol is doc/proto.md of the NBD project.
 */
export interface BareExport {
  name: string;
  fd: number;
  size: number;
}

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPT_REPLY_MAGIC = 0x0003e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;

const FLAG_FIXED_NEWSTYLE = 1 << 0;
const FLAG_NO_ZEROES = 1 << 1;
const KNOWN_CLIENT_FLAGS = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;

const OPT_EXPORT_NAME = 1;
const OPT_ABORT = 2;
const OPT_LIST = 3;
const OPT_INFO = 6;
const OPT_GO = 7;

const REP_ACK = 1;
const REP_SERVER = 2;
const REP_INFO = 3;
const REP_ERR_UNSUP = 2 ** 31 + 1;
const REP_ERR_INVALID = 2 ** 31 + 3;
const REP_ERR_UNKNOWN = 2 ** 31 + 6;
const INFO_EXPORT = 0;

const TRANSMISSION_FLAGS = (1 << 0) | (1 << 2) | (1 << 3); // HAS_FLAGS, SEND_FLUSH, SEND_FUA
const CMD_FLAG_FUA = 1 << 0;
const CMD_READ = 0;
const CMD_WRITE = 1;
const CMD_DISC = 2;
const CMD_FLUSH = 3;

const EIO = 5;
const EINVAL = 22;
const ENOSPC = 28;

/** Longest option data and request payload taken; beyond them the connection is dropped (a write's payload cannot be skipped unread). */
const MAX_OPTION = 64 * 1024;
const MAX_REQUEST = 32 * 1024 * 1024;
/** Reply bytes queued on a socket past which it is no longer read: a client that never reads cannot grow the server. */
const MAX_QUEUED = 64 * 1024 * 1024;

export function bareServer(exp: BareExport): net.Server {
  return net.createServer((socket) => serveConnection(socket, exp));
}

/** The received bytes, kept as the socket's chunks so that a payload can be written from them uncopied. */
class Received {
  private chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The next `n` bytes (n ≤ length) as slices of the chunks. */
  slices(n: number): Buffer[] {
    const out: Buffer[] = [];
    this.length -= n;
    while (n > 0) {
      const head = this.chunks[0]!;
      if (head.length <= n) {
        out.push(head);
        this.chunks.shift();
        n -= head.length;
      } else {
        out.push(head.subarray(0, n));
        this.chunks[0] = head.subarray(n);
        n = 0;
      }
    }
    return out;
  }

  take(n: number): Buffer {
    const s = this.slices(n);
    return s.length === 1 ? s[0]! : Buffer.concat(s, n);
  }
}

interface Request {
  flags: number;
  type: number;
  cookie: Buffer;
  offset: number;
  length: number;
}

function serveConnection(socket: net.Socket, exp: BareExport): void {
  const input = new Received();
  let phase: 'client-flags' | 'options' | 'transmission' | 'done' = 'client-flags';
  let noZeroes = false;
  let option: { type: number; length: number } | undefined;
  let request: Request | undefined;
  let corked = false;
  let paused = false;

  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  socket.on('drain', () => {
    if (paused) {
      paused = false;
      socket.resume();
    }
  });

  const send = (b: Buffer): void => {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(() => {
        corked = false;
        socket.uncork();
      });
    }
    socket.write(b);
    if (socket.writableLength > MAX_QUEUED && !paused) {
      paused = true;
      socket.pause();
    }
  };
  const drop = (): void => {
    phase = 'done';
    socket.destroy();
  };
  const optReply = (opt: number, type: number, data: Buffer = Buffer.alloc(0)): void => {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(OPT_REPLY_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data.length, 16);
    send(Buffer.concat([h, data]));
  };
  const simpleReply = (cookie: Buffer, error: number, into: Buffer = Buffer.alloc(16)): Buffer => {
    into.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    into.writeUInt32BE(error, 4);
    cookie.copy(into, 8);
    return into;
  };

  const greeting = Buffer.alloc(18);
  greeting.writeBigUInt64BE(NBDMAGIC, 0);
  greeting.writeBigUInt64BE(IHAVEOPT, 8);
  greeting.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  socket.write(greeting);

  /** An option whose data has all arrived. */
  const handleOption = (opt: number, data: Buffer): void => {
    switch (opt) {
      case OPT_EXPORT_NAME: {
        // No way to refuse a name here but to hang up.
        if (!knownName(data.toString('utf8'))) return drop();
        const r = Buffer.alloc(noZeroes ? 10 : 134);
        r.writeBigUInt64BE(BigInt(exp.size), 0);
        r.writeUInt16BE(TRANSMISSION_FLAGS, 8);
        send(r);
        phase = 'transmission';
        return;
      }
      case OPT_ABORT:
        optReply(opt, REP_ACK);
        phase = 'done';
        socket.end();
        return;
      case OPT_LIST: {
        if (data.length) return optReply(opt, REP_ERR_INVALID);
        const name = Buffer.from(exp.name);
        const d = Buffer.alloc(4 + name.length);
        d.writeUInt32BE(name.length, 0);
        name.copy(d, 4);
        optReply(opt, REP_SERVER, d);
        return optReply(opt, REP_ACK);
      }
      case OPT_INFO:
      case OPT_GO: {
        const nameLength = data.length >= 4 ? data.readUInt32BE(0) : -1;
        const infos = nameLength >= 0 && data.length >= 6 + nameLength ? data.readUInt16BE(4 + nameLength) : -1;
        if (infos < 0 || data.length !== 6 + nameLength + 2 * infos) return optReply(opt, REP_ERR_INVALID);
        if (!knownName(data.toString('utf8', 4, 4 + nameLength))) return optReply(opt, REP_ERR_UNKNOWN);
        // NBD_INFO_EXPORT is always sent; the other information types a client asks for are optional.
        const info = Buffer.alloc(12);
        info.writeUInt16BE(INFO_EXPORT, 0);
        info.writeBigUInt64BE(BigInt(exp.size), 2);
        info.writeUInt16BE(TRANSMISSION_FLAGS, 10);
        optReply(opt, REP_INFO, info);
        optReply(opt, REP_ACK);
        if (opt === OPT_GO) phase = 'transmission';
        return;
      }
      default:
        return optReply(opt, REP_ERR_UNSUP);
    }
  };
  const knownName = (name: string): boolean => name === exp.name || name === '';

  const handleRequest = (r: Request, payload: Buffer[] | undefined): void => {
    const inRange = r.offset + r.length <= exp.size;
    switch (r.type) {
      case CMD_READ: {
        if (!inRange || r.length === 0 || r.length > MAX_REQUEST) return send(simpleReply(r.cookie, EINVAL));
        const reply = Buffer.allocUnsafe(16 + r.length);
        try {
          readFully(exp.fd, reply.subarray(16), r.offset);
        } catch {
          return send(simpleReply(r.cookie, EIO));
        }
        return send(simpleReply(r.cookie, 0, reply));
      }
      case CMD_WRITE: {
        if (!inRange) return send(simpleReply(r.cookie, ENOSPC));
        try {
          writeFully(exp.fd, payload ?? [], r.offset);
          if (r.flags & CMD_FLAG_FUA) fs.fdatasyncSync(exp.fd);
        } catch {
          return send(simpleReply(r.cookie, EIO));
        }
        return send(simpleReply(r.cookie, 0));
      }
      case CMD_FLUSH:
        try {
          fs.fdatasyncSync(exp.fd);
        } catch {
          return send(simpleReply(r.cookie, EIO));
        }
        return send(simpleReply(r.cookie, 0));
      case CMD_DISC:
        // Every earlier request has been answered (all of them run synchronously): close.
        phase = 'done';
        socket.end();
        return;
      default:
        return send(simpleReply(r.cookie, EINVAL));
    }
  };

  socket.on('data', (chunk: Buffer) => {
    input.push(chunk);
    for (;;) {
      if (phase === 'done') return;
      if (phase === 'client-flags') {
        if (input.length < 4) return;
        const flags = input.take(4).readUInt32BE(0);
        if (flags & ~KNOWN_CLIENT_FLAGS || !(flags & FLAG_FIXED_NEWSTYLE)) return drop();
        noZeroes = (flags & FLAG_NO_ZEROES) !== 0;
        phase = 'options';
      } else if (phase === 'options') {
        if (!option) {
          if (input.length < 16) return;
          const h = input.take(16);
          if (h.readBigUInt64BE(0) !== IHAVEOPT) return drop();
          option = { type: h.readUInt32BE(8), length: h.readUInt32BE(12) };
          if (option.length > MAX_OPTION) return drop();
        }
        if (input.length < option.length) return;
        const { type, length } = option;
        option = undefined;
        handleOption(type, input.take(length));
      } else {
        if (!request) {
          if (input.length < 28) return;
          const h = input.take(28);
          if (h.readUInt32BE(0) !== REQUEST_MAGIC) return drop();
          request = {
            flags: h.readUInt16BE(4),
            type: h.readUInt16BE(6),
            cookie: Buffer.from(h.subarray(8, 16)),
            offset: h.readUInt32BE(16) * 2 ** 32 + h.readUInt32BE(20),
            length: h.readUInt32BE(24),
          };
          if (request.type === CMD_WRITE && request.length > MAX_REQUEST) return drop();
        }
        const r = request;
        const payloadLength = r.type === CMD_WRITE ? r.length : 0;
        if (input.length < payloadLength) return;
        request = undefined;
        handleRequest(r, payloadLength ? input.slices(payloadLength) : undefined);
      }
    }
  });
}

function readFully(fd: number, into: Buffer, offset: number): void {
  for (let done = 0; done < into.length; ) {
    const n = fs.readSync(fd, into, done, into.length - done, offset + done);
    if (n === 0) throw new Error('read past the end of the file');
    done += n;
  }
}

function writeFully(fd: number, chunks: Buffer[], offset: number): void {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  if (total === 0) return;
  const done = fs.writevSync(fd, chunks, offset);
  // A short writev is rare on a regular file; the rest goes in one copy.
  if (done < total) {
    const rest = Buffer.concat(chunks).subarray(done);
    for (let i = 0; i < rest.length; ) i += fs.writeSync(fd, rest, i, rest.length - i, offset + done + i);
  }
}
