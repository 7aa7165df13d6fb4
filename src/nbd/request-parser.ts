import { BufferPool } from './buffer-pool.js';
import { CMD_WRITE, MAX_PAYLOAD, REQUEST_MAGIC } from './constants.js';
import type { ReadPlacement } from './socket-reads.js';

/** One transmission request as it came off the wire. */
export interface Request {
  flags: number;
  type: number;
  /** The cookie is opaque: kept as its two 32-bit halves and echoed byte for byte. */
  cookieHi: number;
  cookieLo: number;
  /** hi * 2**32 + lo; above 2**53 it is inexact but still beyond any export, so range checks reject it. */
  offset: number;
  length: number;
  /** WRITE payload; undefined when it was too large to keep and was skipped. */
  payload: Buffer | undefined;
  /** The pooled buffer the payload is a view of, to be given back once the write is done. */
  pooled: Buffer | undefined;
}

export const REQUEST_HEADER = 28;

export interface ParserSink {
  request(req: Request): void;
  /** The stream cannot be parsed any further (bad magic): the connection must close. */
  fatal(reason: string): void;
  /**
   * Asked before each request is taken off the stream, with its type and
   * length: true stops parsing (the request stays unread) until resume()
   * (backpressure); false means the sink has made room for it.
   */
  full(type: number, length: number): boolean;
}

const enum State {
  Header,
  Payload,
  Skip,
}

/**
 * The rest of a payload at least this long is read straight into its buffer
 * when the connection can place reads; a shorter one is copied: a read call
 * of its own would cost more than copying it.
 */
export const PLACE_MIN = 64 * 1024;

/**
 * Splits the socket byte stream into requests without gathering copies: a
 * header is read in place from the chunk it sits in, and a write payload that
 * lies within one chunk is handed on as a view of it. A payload spread over
 * several chunks is copied, once, into a pooled buffer (measured:
 * Buffer.concat of payloads cost 2-3x on 1 MiB writes), and where the
 * connection allows, the rest of a large one is read straight into that
 * buffer and not copied at all.
 */
export class RequestParser {
  private chunks: Buffer[] = [];
  private head = 0;
  private available = 0;
  private state = State.Header;
  private pending: Request | undefined;
  private filled = 0;
  private skipLeft = 0;
  private stopped = false;
  private readonly scratch = Buffer.alloc(REQUEST_HEADER);
  /** The chunk being parsed when it is the socket's own buffer (see push). */
  private transient: Buffer | undefined;
  /** The socket's next read goes into the pending payload, at `filled`. */
  private placed = false;
  /** The socket's next read goes into this header-sized buffer (see placeHeader). */
  private placedHeader: Buffer | undefined;
  /** The last request was a large write. */
  private largeWrite = false;

  constructor(
    private readonly sink: ParserSink,
    private readonly buffers: BufferPool = new BufferPool(),
    /** Where the connection can read payloads straight into their buffers (see placedRead). */
    private readonly placement?: ReadPlacement,
  ) {}

  /**
   * Parses what `chunk` completes. A transient chunk is reused by the socket
   * once this returns: no payload is handed on as a view of it, and what is
   * left unparsed (a partial header, or everything after a request that does
   * not fit yet) is copied.
   */
  push(chunk: Buffer, transient = false): void {
    if (this.stopped || chunk.length === 0) return;
    this.chunks.push(chunk);
    this.available += chunk.length;
    if (!transient) return this.run();
    this.transient = chunk;
    try {
      this.run();
    } finally {
      this.transient = undefined;
      const last = this.chunks.length - 1;
      if (last >= 0 && this.chunks[last] === chunk) {
        this.chunks[last] = Buffer.from(last === 0 ? chunk.subarray(this.head) : chunk);
        if (last === 0) this.head = 0;
      }
    }
  }

  /** `n` bytes were read straight into where the parser placed the read: the pending payload, or a header's buffer. */
  placedRead(n: number): void {
    const header = this.placedHeader;
    if (header) {
      this.placedHeader = undefined;
      return this.push(header.subarray(0, n));
    }
    if (!this.placed) throw new Error('a read landed in a payload that did not ask for it');
    this.placed = false;
    this.filled += n;
    this.run();
  }

  /** Continues after full() turned false. */
  resume(): void {
    if (!this.stopped) this.run();
  }

  /** Drops buffered input; nothing more is parsed (DISC, fatal error, close). */
  stop(): void {
    this.stopped = true;
    const pooled = this.pending?.pooled;
    if (pooled && this.placed) this.placement!.abandon(() => this.buffers.give(pooled));
    else if (pooled) this.buffers.give(pooled);
    if (this.placedHeader) this.placement!.abandon(() => undefined);
    this.placed = false;
    this.placedHeader = undefined;
    this.pending = undefined;
    this.chunks = [];
    this.available = 0;
  }

  get buffered(): number {
    return this.available;
  }

  private run(): void {
    while (!this.stopped) {
      if (this.state === State.Header) {
        if (this.available < REQUEST_HEADER) return this.placeHeader();
        // A header without the magic is fatal at once, whatever room its garbage would ask for.
        if (this.peek(0, 4) === REQUEST_MAGIC && this.sink.full(this.peek(6, 2), this.peek(24, 4))) return;
        this.header();
      } else if (this.state === State.Payload) {
        if (!this.payload()) return;
      } else if (!this.skip()) return;
    }
  }

  private header(): void {
    let buf = this.chunks[0]!;
    let at = this.head;
    if (buf.length - at < REQUEST_HEADER) {
      this.copyOut(this.scratch, 0, REQUEST_HEADER);
      buf = this.scratch;
      at = 0;
    } else this.consume(REQUEST_HEADER);
    const magic = buf.readUInt32BE(at);
    if (magic !== REQUEST_MAGIC) {
      this.stopped = true;
      this.sink.fatal(`bad request magic 0x${magic.toString(16).padStart(8, '0')}`);
      return;
    }
    const req: Request = {
      flags: buf.readUInt16BE(at + 4),
      type: buf.readUInt16BE(at + 6),
      cookieHi: buf.readUInt32BE(at + 8),
      cookieLo: buf.readUInt32BE(at + 12),
      offset: buf.readUInt32BE(at + 16) * 4294967296 + buf.readUInt32BE(at + 20),
      length: buf.readUInt32BE(at + 24),
      payload: undefined,
      pooled: undefined,
    };
    if (req.type !== CMD_WRITE || req.length === 0) {
      this.largeWrite = false;
      this.sink.request(req);
    } else if (req.length > MAX_PAYLOAD) {
      // Too large to keep, but the stream stays in step only if it is consumed.
      this.pending = req;
      this.skipLeft = req.length;
      this.state = State.Skip;
    } else {
      this.pending = req;
      this.filled = 0;
      this.state = State.Payload;
      const first = this.chunks[0];
      if (first && first !== this.transient && first.length - this.head >= req.length) {
        req.payload = first.subarray(this.head, this.head + req.length);
        this.consume(req.length);
        this.finish();
      } else {
        req.pooled = this.buffers.take(req.length);
        req.payload = req.pooled.subarray(0, req.length);
      }
    }
  }

  private payload(): boolean {
    // The next read lands in the payload itself; nothing to do before it has.
    if (this.placed) return false;
    const req = this.pending!;
    const want = req.length - this.filled;
    const n = Math.min(want, this.available);
    if (n > 0) {
      this.copyOut(req.payload!, this.filled, n);
      this.filled += n;
    }
    if (this.filled < req.length) {
      if (this.placement && req.length - this.filled >= PLACE_MIN) this.placed = this.placement.place(req.payload!.subarray(this.filled));
      return false;
    }
    this.finish();
    return true;
  }

  private skip(): boolean {
    const n = Math.min(this.skipLeft, this.available);
    this.consume(n);
    this.skipLeft -= n;
    if (this.skipLeft > 0) return false;
    this.finish();
    return true;
  }

  private finish(): void {
    const req = this.pending!;
    this.pending = undefined;
    this.state = State.Header;
    this.largeWrite = req.length >= PLACE_MIN;
    this.sink.request(req);
  }

  /**
   * After a large write, with nothing buffered, the next read is placed into
   * a buffer of a header's size: if another large write follows (a guest
   * streaming), its header comes alone and its whole payload is read in
   * place, where a read into the connection's buffer would have taken a
   * quarter of it there to be copied. One small read more per large write.
   */
  private placeHeader(): void {
    if (!this.largeWrite || this.available > 0 || !this.placement || this.placedHeader || this.placed) return;
    const header = Buffer.allocUnsafe(REQUEST_HEADER);
    if (this.placement.place(header)) this.placedHeader = header;
  }

  /** A big-endian field of the next header (`width` 2 or 4 bytes at `at`), read without consuming it. */
  private peek(at: number, width: 2 | 4): number {
    let value = 0;
    let chunk = 0;
    let pos = this.head + at;
    while (pos >= this.chunks[chunk]!.length) pos -= this.chunks[chunk++]!.length;
    for (let i = 0; i < width; i++) {
      value = value * 256 + this.chunks[chunk]![pos]!;
      if (++pos === this.chunks[chunk]!.length) {
        chunk++;
        pos = 0;
      }
    }
    return value;
  }

  /** Copies n buffered bytes into dst at `at`, consuming them. */
  private copyOut(dst: Buffer, at: number, n: number): void {
    let done = 0;
    while (done < n) {
      const c = this.chunks[0]!;
      const take = Math.min(c.length - this.head, n - done);
      c.copy(dst, at + done, this.head, this.head + take);
      done += take;
      this.consume(take);
    }
  }

  private consume(n: number): void {
    this.available -= n;
    this.head += n;
    while (this.chunks.length > 0 && this.head >= this.chunks[0]!.length) {
      this.head -= this.chunks[0]!.length;
      this.chunks.shift();
    }
  }
}
