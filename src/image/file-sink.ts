import fs from 'node:fs';
import type { Writable } from 'node:stream';
import type { ByteSink } from './image-writer.js';

/** A regular file, written at offsets; what is never written stays a hole. */
export function fileSink(fd: number, name: string): ByteSink {
  return {
    name,
    seekable: true,
    write: (buf, offset) => writeAll(fd, buf, offset, name),
    finish: async (size) => {
      fs.ftruncateSync(fd, size);
      fs.fsyncSync(fd);
    },
  };
}

function writeAll(fd: number, buf: Buffer, position: number, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      if (done === buf.length) return resolve();
      fs.write(fd, buf, done, buf.length - done, position + done, (err, n) => {
        if (err) return reject(new Error(`cannot write ${name} at offset ${position + done}: ${err.message}`));
        step(done + n);
      });
    };
    step(0);
  });
}

const ZEROES = Buffer.alloc(1024 * 1024);

/** A stream (stdout, an HTTP upload) written front to back; gaps become zeroes, and the writer waits for the reader. */
export function streamSink(out: Writable, name: string): ByteSink {
  let position = 0;
  const put = async (buf: Buffer): Promise<void> => {
    position += buf.length;
    if (!out.write(buf)) await new Promise<void>((resolve) => out.once('drain', resolve));
  };
  const padTo = async (offset: number): Promise<void> => {
    while (position < offset) await put(ZEROES.subarray(0, Math.min(ZEROES.length, offset - position)));
  };
  return {
    name,
    seekable: false,
    write: async (buf, offset) => {
      if (offset < position) throw new Error(`${name}: a stream cannot go back to offset ${offset} from ${position}`);
      await padTo(offset);
      await put(buf);
    },
    finish: async (size) => {
      if (size < position) throw new Error(`${name}: ${position} bytes were written, more than the ${size} it ends at`);
      await padTo(size);
    },
  };
}
