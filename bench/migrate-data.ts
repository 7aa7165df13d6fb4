import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import { Rng } from '../src/blockdev/index.js';

/**
 * The disk both sides of the migration benchmark move: a sparse raw image of
 * random (incompressible) extents with holes between them, imported into a
 * Strata volume and converted into a qcow2 for QEMU, so that both hold the
 * same bytes in the same places.
 */
const EXTENT = 1 << 20;

export interface DataImage {
  path: string;
  size: number;
  /** Bytes of the extents that hold data; the rest is holes. */
  dataBytes: number;
}

/** `dataBytes` of `size` in 1 MiB extents at random places (whole extents; rounded down). */
export function writeDataImage(file: string, size: number, dataBytes: number, seed: number): DataImage {
  const extents = Math.floor(size / EXTENT);
  const wanted = Math.min(extents, Math.floor(dataBytes / EXTENT));
  // A random choice of `wanted` of the extents (a partial Fisher–Yates shuffle).
  const order = Array.from({ length: extents }, (_, i) => i);
  const rng = new Rng(seed);
  for (let i = 0; i < wanted; i++) {
    const j = i + rng.below(extents - i);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const chosen = order.slice(0, wanted).sort((a, b) => a - b);
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, size);
    const buf = Buffer.alloc(EXTENT);
    for (const e of chosen) {
      randomFillSync(buf);
      fs.writeSync(fd, buf, 0, EXTENT, e * EXTENT);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return { path: file, size, dataBytes: wanted * EXTENT };
}
