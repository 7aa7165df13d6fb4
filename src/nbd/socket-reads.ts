import net from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * Receives what a connection reads. A transient chunk is a view of the
 * connection's own read buffer: valid only during the call, so whatever the
 * sink keeps of it, it copies.
 */
export type ChunkSink = (chunk: Buffer, transient: boolean) => void;

/** Bytes a connection reads into when it reads into a buffer of its own. */
export const READ_BUFFER_BYTES = 256 * 1024;

interface OwnReads {
  sink: ChunkSink | undefined;
  /** Copies of what arrived while no sink listened (none in practice: a stage pauses before it hands over). */
  held: Buffer[];
  /** Told how many bytes a read put straight into the target placed for it. */
  onPlaced: ((n: number) => void) | undefined;
  /** Where the next read goes, when not into the connection's own buffer (see placeReads). */
  target: Buffer | undefined;
  /** The connection's own buffer. */
  readonly buffer: Buffer;
  /** What the connection reads into next: its own buffer or a target. */
  next: Buffer;
  /** True while a read is being delivered: only then can the next read be placed. */
  delivering: boolean;
  /** The target was given up while armed: run once no read can land in it any more. */
  abandoned: (() => void) | undefined;
}

/** Sockets that read into a buffer of their own (see ownReads), with where their bytes go. */
const owned = new WeakMap<Duplex, OwnReads>();

/** What this module needs of net's private socket and handle fields; checked before use. */
interface SocketInternals {
  _handle?: { useUserBuffer?: unknown } | null;
}
type AdoptOptions = net.SocketConstructorOpts & { handle: unknown; onread: net.OnReadOpts };

/**
 * A socket over the same connection as `socket` (which must be fresh from
 * accept, nothing read yet) that reads into `buffer` instead of a new 64 KiB
 * ArrayBuffer per read; undefined, and `socket` untouched, when this Node
 * cannot.
 *
 * Why: at hundreds of MB/s those per-read buffers are external memory that V8
 * counts against the old generation's limit, and with the server's small heap
 * it ran a full mark-compact every ~16 MiB received, halving 1 MiB write
 * throughput. Node offers reads into a caller's buffer (`onread`) only to
 * sockets it creates, not to accepted ones, so the accepted handle is moved to
 * a socket created with `onread`. The old object then gives up the handle, so
 * it can neither read nor close it; its destroy() only settles net.Server's
 * count (the NBD server keeps its own).
 */
export function ownReads(socket: net.Socket, buffer: Buffer): net.Socket | undefined {
  const internals = socket as unknown as SocketInternals;
  const handle = internals._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function' || socket.bytesRead > 0 || socket.readableLength > 0) return undefined;
  const state: OwnReads = { sink: undefined, held: [], onPlaced: undefined, target: undefined, buffer, next: buffer, delivering: false, abandoned: undefined };
  const onread: net.OnReadOpts = {
    // Asked once at the start and again after every read: where the next one goes.
    buffer: () => {
      state.next = state.target ?? buffer;
      state.target = undefined;
      return state.next;
    },
    callback: (n) => {
      const into = state.next;
      state.delivering = true;
      try {
        if (into !== buffer) {
          const abandoned = state.abandoned;
          state.abandoned = undefined;
          if (abandoned) abandoned();
          else state.onPlaced!(n);
        } else if (state.sink) state.sink(buffer.subarray(0, n), true);
        else state.held.push(Buffer.from(buffer.subarray(0, n)));
      } finally {
        state.delivering = false;
      }
      return true;
    },
  };
  const options: AdoptOptions = { handle, onread, allowHalfOpen: socket.allowHalfOpen };
  let adopted: net.Socket;
  try {
    adopted = new net.Socket(options);
  } catch {
    // The old socket still owns the handle: serve the connection with Node's own reads.
    return undefined;
  }
  internals._handle = null;
  socket.destroy();
  owned.set(adopted, state);
  adopted.once('close', () => {
    const abandoned = state.abandoned;
    state.abandoned = undefined;
    abandoned?.();
  });
  return adopted;
}

/**
 * Reads placed where their bytes belong: a sink that knows the next bytes
 * are the rest of a large payload has them read straight into its buffer
 * instead of copying them out of the connection's own (measured: that copy
 * was 6.6% of the server's time on 1 MiB writes).
 */
export interface ReadPlacement {
  /**
   * The next read goes straight into `target` (and no further than its
   * end); the bytes are reported to the onPlaced of placeReads. Only while
   * a read is being delivered can the next one be chosen: false otherwise,
   * and the bytes arrive as chunks as usual.
   */
  place(target: Buffer): boolean;
  /** The sink no longer wants the placed read it asked for; `free` runs once no read can land in its target any more. */
  abandon(free: () => void): void;
}

/** Placement of `stream`'s reads (see ReadPlacement); undefined for a stream that does not read into a buffer of its own. */
export function placeReads(stream: Duplex, onPlaced: (n: number) => void): ReadPlacement | undefined {
  const own = owned.get(stream);
  if (!own) return undefined;
  own.onPlaced = onPlaced;
  return {
    place(target) {
      if (!own.delivering || target.length === 0) return false;
      own.target = target;
      return true;
    },
    abandon(free) {
      // Chosen during this delivery but not yet handed to the socket: simply not placed.
      own.target = undefined;
      // Handed to the socket: a read may still land there until it has, or the socket is closed.
      if (own.next !== own.buffer && !own.delivering && !stream.destroyed) own.abandoned = free;
      else free();
    },
  };
}

/**
 * Sends every chunk `stream` reads from now on to `sink`, until the returned
 * function is called. Streams from ownReads hand over transient chunks; any
 * other stream's chunks are its own 'data' and may be kept.
 */
export function listenChunks(stream: Duplex, sink: ChunkSink): () => void {
  const own = owned.get(stream);
  if (!own) {
    const onData = (chunk: Buffer): void => sink(chunk, false);
    stream.on('data', onData);
    return () => void stream.off('data', onData);
  }
  if (own.sink) throw new Error('a connection has one reader at a time');
  own.sink = sink;
  const held = own.held;
  own.held = [];
  for (const chunk of held) sink(chunk, false);
  return () => {
    if (own.sink === sink) own.sink = undefined;
  };
}
