import type { ContentRun, ImageContent } from '../../../src/image/image-writer.js';

const ZEROES = Buffer.alloc(1024 * 1024);

export function isZero(buf: Buffer): boolean {
  for (let at = 0; at < buf.length; at += ZEROES.length) {
    const end = Math.min(buf.length, at + ZEROES.length);
    if (buf.compare(ZEROES, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}

/** The runs of a disk's bytes by granule: granules that hold data are data, the others holes (or zero runs where `zeroAt` says). */
export function runsOf(bytes: Buffer, granule = 4096, zeroAt: (offset: number) => boolean = () => false): ContentRun[] {
  const runs: ContentRun[] = [];
  for (let at = 0; at < bytes.length; at += granule) {
    const end = Math.min(bytes.length, at + granule);
    const kind = !isZero(bytes.subarray(at, end)) ? 'data' : zeroAt(at) ? 'zero' : 'hole';
    const last = runs[runs.length - 1];
    if (last && last.kind === kind) last.length += end - at;
    else runs.push({ offset: at, length: end - at, kind });
  }
  return runs;
}

/** A disk's bytes as what a writer writes, with the runs given (holes and zero runs must read zero). */
export function bufferContent(bytes: Buffer, runs: ContentRun[] = runsOf(bytes)): ImageContent {
  return {
    size: bytes.length,
    runs: async function* () {
      yield* runs;
    },
    read: async (buf, offset) => {
      buf.fill(0);
      bytes.copy(buf, 0, offset, Math.min(bytes.length, offset + buf.length));
    },
  };
}
