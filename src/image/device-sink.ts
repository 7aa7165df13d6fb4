import type { BlockDevice } from '../blockdev/index.js';
import { runsOf } from '../host/image-copy.js';
import type { ImageSink } from './image-reader.js';

/** Bytes of consecutive data gathered into one write at most. */
const COALESCE_BYTES = 4 * 1024 * 1024;
/** Ranges this large go to the device at once: gathering them saves few requests, costs a copy and holds the write back. */
const SMALL_BYTES = 256 * 1024;

export interface DeviceSinkOptions {
  /** The device reads zeroes wherever nothing was written (a new volume with no backing): zero runs are then left unwritten. */
  readsZeroes: boolean;
  /** Bytes of writes in flight at most; the reader waits beyond it. */
  inFlightBytes?: number;
  /** Called with the bytes reported so far (data and zero), for a progress bar. */
  progress?: (bytes: number) => void;
}

export interface DeviceSink extends ImageSink {
  /** Waits for every write in flight and throws the first failure. */
  drain(): Promise<void>;
  readonly stats: { dataBytes: number; zeroBytes: number };
}

/**
 * Writes decoded content into a volume (or a served volume's NBD export)
 * with several writes in flight. Zero granules inside data are found and, on
 * a device that reads zeroes already, not written; over a backing layer they
 * are written as zeroes, since they must hide what lies below.
 */
export function deviceSink(device: BlockDevice, opts: DeviceSinkOptions): DeviceSink {
  const limit = opts.inFlightBytes ?? 16 * 1024 * 1024;
  const stats = { dataBytes: 0, zeroBytes: 0 };
  let inFlight = 0;
  let reported = 0;
  let failure: { err: unknown } | undefined;
  const running = new Set<Promise<void>>();
  const check = (offset: number, length: number): void => {
    if (offset < 0 || offset + length > device.size) throw new Error(`the image writes ${length} bytes at offset ${offset}, past the end of ${device.name} (${device.size} bytes)`);
  };
  const start = async (bytes: number, work: () => Promise<void>): Promise<void> => {
    while (inFlight > 0 && inFlight + bytes > limit && !failure) await Promise.race(running);
    if (failure) throw failure.err;
    inFlight += bytes;
    const p = work()
      .catch((err: unknown) => {
        failure ??= { err };
      })
      .finally(() => {
        inFlight -= bytes;
        running.delete(p);
      });
    running.add(p);
  };
  const zeroOut = (offset: number, length: number): Promise<void> => device.writeZeroes(offset, length, { mayUnmap: opts.readsZeroes });
  const write = (offset: number, buf: Buffer): Promise<void> =>
    start(buf.length, async () => {
      for (const run of runsOf(buf)) {
        if (run.zero) {
          stats.zeroBytes += run.length;
          if (!opts.readsZeroes) await zeroOut(offset + run.offset, run.length);
        } else {
          await device.write(buf.subarray(run.offset, run.offset + run.length), offset + run.offset);
          stats.dataBytes += run.length;
        }
      }
    });
  // Small ranges that follow one another (64 KiB grains, clusters) go to the device as one write: a write's cost in the pool is mostly per request.
  let pending: { offset: number; parts: Buffer[]; length: number } | null = null;
  const flush = async (): Promise<void> => {
    if (!pending) return;
    const p = pending;
    pending = null;
    await write(p.offset, p.parts.length === 1 ? p.parts[0]! : Buffer.concat(p.parts, p.length));
  };
  return {
    stats,
    data: async (offset, buf) => {
      check(offset, buf.length);
      reported += buf.length;
      opts.progress?.(reported);
      if (buf.length < SMALL_BYTES && pending && pending.offset + pending.length === offset && pending.length + buf.length <= COALESCE_BYTES) {
        pending.parts.push(buf);
        pending.length += buf.length;
        return;
      }
      await flush();
      if (buf.length >= SMALL_BYTES) await write(offset, buf);
      else pending = { offset, parts: [buf], length: buf.length };
    },
    zero: async (offset, length) => {
      check(offset, length);
      reported += length;
      opts.progress?.(reported);
      stats.zeroBytes += length;
      if (!opts.readsZeroes) await start(0, () => zeroOut(offset, length));
    },
    drain: async () => {
      await flush().catch(() => undefined);
      while (running.size > 0) await Promise.all(running);
      if (failure) throw failure.err;
    },
  };
}
