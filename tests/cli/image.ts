import fs from 'node:fs';
import { Rng } from '../../src/blockdev/index.js';

export interface Segment {
  offset: number;
  length: number;
  kind: 'hole' | 'zero' | 'data';
}

/**
 * Writes a raw image of `size` bytes made of random-length runs at arbitrary
 * byte boundaries: holes (never written, sparse in the file), zero runs
 * (written zeroes, allocated in the file) and random data with zero pages in it.
 */
export function sparseImage(file: string, size: number, seed: number, maxRun = 3 << 20): Segment[] {
  const rng = new Rng(seed);
  const segments: Segment[] = [];
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, size);
    for (let pos = 0; pos < size; ) {
      const length = Math.min(size - pos, 1 + rng.below(maxRun));
      const roll = rng.below(10);
      const kind = roll < 4 ? 'hole' : roll < 6 ? 'zero' : 'data';
      const buf = Buffer.alloc(length);
      if (kind === 'data') {
        for (let i = 0; i < length; i++) buf[i] = 1 + rng.below(255);
        // Zero stretches inside data: whole zero pages among them are found and left unwritten.
        for (let z = 0; z < 3 && length > 16384; z++) {
          const s = rng.below(length - 12288);
          buf.fill(0, s, s + 12288);
        }
      }
      if (kind !== 'hole') fs.writeSync(fd, buf, 0, length, pos);
      segments.push({ offset: pos, length, kind });
      pos += length;
    }
  } finally {
    fs.closeSync(fd);
  }
  return segments;
}

/** Bytes of `cluster`-sized blocks of the file that hold any nonzero byte. */
export function nonzeroBlocks(file: string, cluster: number): number {
  const data = fs.readFileSync(file);
  const zero = Buffer.alloc(cluster);
  let n = 0;
  for (let at = 0; at < data.length; at += cluster) {
    const end = Math.min(at + cluster, data.length);
    if (data.compare(zero, 0, end - at, at, end) !== 0) n += cluster;
  }
  return n;
}
