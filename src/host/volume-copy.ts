import type { BlockDevice } from '../blockdev/index.js';
import { CHUNK, runsOf } from './image-copy.js';
import { volumeRuns, type Mappable } from './volume-runs.js';

/**
 * Copies what one volume reads into a fresh one of the same size (a full
 * clone): only the ranges block status calls data are read, and zeroes
 * inside them are left unwritten, as import does, since a new volume reads
 * zeroes already. Stops between chunks when `signal` is aborted.
 */
export async function copyVolumeInto(src: BlockDevice & Mappable, dst: BlockDevice, onProgress: (done: number, total: number) => void, signal?: AbortSignal): Promise<{ bytesWritten: number }> {
  if (dst.size < src.size) throw new Error(`${dst.name} (${dst.size} bytes) is smaller than ${src.name} (${src.size} bytes)`);
  let bytesWritten = 0;
  const buf = Buffer.allocUnsafe(CHUNK);
  onProgress(0, src.size);
  for await (const run of volumeRuns(src)) {
    if (run.type === 'data') {
      for (let pos = run.offset; pos < run.offset + run.length; pos += CHUNK) {
        signal?.throwIfAborted();
        const n = Math.min(CHUNK, run.offset + run.length - pos);
        const chunk = buf.subarray(0, n);
        await src.read(chunk, pos);
        for (const r of runsOf(chunk)) {
          if (r.zero) continue;
          await dst.write(chunk.subarray(r.offset, r.offset + r.length), pos + r.offset);
          bytesWritten += r.length;
        }
        onProgress(pos + n, src.size);
      }
    }
    signal?.throwIfAborted();
    onProgress(run.offset + run.length, src.size);
  }
  await dst.flush();
  return { bytesWritten };
}
