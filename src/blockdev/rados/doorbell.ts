import net from 'node:net';
import koffi from 'koffi';
import type { Handle, LibRados } from './librados.js';

/**
 * How librados tells the event loop that an operation completed without
 * running JavaScript on a librados thread.
 *
 * koffi can hand librados a JS function as the completion callback, but then
 * librados's completion thread waits, for every completion, until the event
 * loop has run that function: completions come one at a time, each at the
 * pace of a round trip through the loop, and a busy loop holds back every
 * answer behind it. Instead the callback is C's own fputc(), and its argument
 * an unbuffered stdio stream on a pipe: librados calls fputc(completion,
 * stream), which writes the completion pointer's low byte and returns at
 * once. The loop reads the pipe and, for each byte, takes the oldest
 * operation with that low byte that librados says is complete. A byte may
 * settle an operation other than the one that sent it (two with one low
 * byte), but never one that is not complete, and each byte settles one:
 * every completion writes its byte after it is marked complete, so there is
 * always a complete one to take.
 */

/** glibc's setvbuf mode for an unbuffered stream. */
const IONBF = 2;

export interface Ringing {
  completion: Handle;
  /** Called with librados's return value once the operation is complete. */
  settle: (ret: number) => void;
}

/** What the doorbell asks librados of a completion. */
export type CompletionCalls = Pick<LibRados, 'completionIsComplete' | 'completionReturn' | 'completionRelease'>;

export class Doorbell {
  /** What librados calls on completion (fputc) and its argument (the stream). */
  readonly callback: Handle;
  readonly stream: Handle;
  /** Operations in flight by their completion's low byte, oldest first. */
  private readonly waiting = new Map<number, Ringing[]>();
  private count = 0;
  private readonly socket: net.Socket;

  constructor(private readonly api: CompletionCalls) {
    const libc = koffi.load('libc.so.6');
    const fds = new Int32Array(2);
    if ((libc.func('int pipe(_Out_ int *fds)')(fds) as number) !== 0) throw new Error('cannot make the pipe that carries RADOS completions');
    const stream: Handle = libc.func('void *fdopen(int fd, const char *mode)')(fds[1], 'w');
    if (stream === null) throw new Error('cannot open a stream on the pipe that carries RADOS completions');
    libc.func('int setvbuf(void *stream, void *buf, int mode, size_t size)')(stream, null, IONBF, 0);
    this.stream = stream;
    this.callback = libc.func('void *dlsym(void *handle, const char *symbol)')(null, 'fputc');
    if (this.callback === null) throw new Error("libc's fputc not found");
    this.socket = new net.Socket({ fd: fds[0]!, readable: true, writable: false });
    this.socket.on('data', (bytes: Buffer) => this.rang(bytes));
    this.socket.unref();
  }

  /** Waits for an operation whose completion was made with `callback` and `stream`. */
  expect(ringing: Ringing): void {
    const key = lowByte(ringing.completion);
    const list = this.waiting.get(key);
    if (list === undefined) this.waiting.set(key, [ringing]);
    else list.push(ringing);
    // While something is in flight the pipe keeps the process alive.
    if (this.count++ === 0) this.socket.ref();
  }

  private rang(bytes: Buffer): void {
    for (const key of bytes) {
      const list = this.waiting.get(key);
      const at = list?.findIndex((r) => (this.api.completionIsComplete(r.completion) as number) !== 0) ?? -1;
      if (list === undefined || at < 0) continue;
      const [done] = list.splice(at, 1);
      if (list.length === 0) this.waiting.delete(key);
      if (--this.count === 0) this.socket.unref();
      const ret = this.api.completionReturn(done!.completion) as number;
      this.api.completionRelease(done!.completion);
      done!.settle(ret);
    }
  }
}

function lowByte(pointer: Handle): number {
  return Number(koffi.address(pointer) & 0xffn);
}
