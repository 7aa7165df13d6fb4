import type { Duplex } from 'node:stream';
import { listenChunks } from './socket-reads.js';

/** The peer closed the connection, or broke the protocol, while a read was waiting. */
export class ConnectionClosed extends Error {}

/**
 * Exact-length reads from a stream, for the handshake where speed does not
 * matter and sequential code is clearest. detach() hands back whatever was
 * read ahead so the next stage (transmission or TLS) starts where this left off.
 */
export class WireReader {
  private chunks: Buffer[] = [];
  private available = 0;
  private want = 0;
  private waiter: { resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private ended = false;
  private readonly unlisten: () => void;
  private readonly onData = (chunk: Buffer, transient: boolean): void => {
    if (transient) chunk = Buffer.from(chunk);
    this.chunks.push(chunk);
    this.available += chunk.length;
    this.deliver();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.deliver();
  };

  constructor(private readonly stream: Duplex) {
    this.unlisten = listenChunks(stream, this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
  }

  read(n: number): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error('overlapping handshake reads'));
    return new Promise((resolve, reject) => {
      this.want = n;
      this.waiter = { resolve, reject };
      this.deliver();
    });
  }

  /** Reads and throws away n bytes without holding them (an option too large to keep). */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      const step = Math.min(n, 64 * 1024);
      await this.read(step);
      n -= step;
    }
  }

  /** Stops reading; returns bytes read ahead of the handshake's last message. */
  detach(): Buffer {
    this.unlisten();
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onEnd);
    this.stream.pause();
    const rest = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = [];
    this.available = 0;
    return rest;
  }

  private deliver(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.available >= this.want) {
      this.waiter = undefined;
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      const out = all.subarray(0, this.want);
      const rest = all.subarray(this.want);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.available = rest.length;
      w.resolve(out);
    } else if (this.ended) {
      this.waiter = undefined;
      w.reject(new ConnectionClosed('the client closed the connection during the handshake'));
    }
  }
}
