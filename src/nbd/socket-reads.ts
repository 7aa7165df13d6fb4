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
  const state: OwnReads = { sink: undefined, held: [] };
  const onread: net.OnReadOpts = {
    buffer,
    callback: (n) => {
      const chunk = buffer.subarray(0, n);
      if (state.sink) state.sink(chunk, true);
      else state.held.push(Buffer.from(chunk));
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
  return adopted;
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
