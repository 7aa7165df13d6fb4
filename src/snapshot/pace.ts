import { setTimeout as sleep } from 'node:timers/promises';
import type { ChainJobOptions } from './types.js';

/**
 * A progress callback for work done a table at a time: reports bytes (each
 * table stands for `span` bytes of virtual space), stops on the job's abort
 * signal and keeps to its rate by sleeping between tables.
 */
export function paced(opts: ChainJobOptions, span: number): (done: number, total: number) => Promise<void> {
  const started = performance.now();
  return async (done, total) => {
    opts.onProgress?.({ done: done * span, total: total * span });
    opts.signal?.throwIfAborted();
    const rate = opts.rateBytesPerSec;
    if (rate === undefined || rate <= 0) return;
    const due = ((done * span) / rate) * 1000 - (performance.now() - started);
    if (due > 0) await sleep(due, undefined, { signal: opts.signal });
  };
}
