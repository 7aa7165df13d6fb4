import type { MetaStore } from './metastore.js';
import type { Geometry } from './geometry.js';
import { readHost, readL1 } from './geometry.js';
import type { PoolHeader } from './header.js';
import type { Layer } from './layer.js';
import { BlockType, TRAILER } from './metablock.js';

/**
 * Every cluster the maps claim: the catalog runs and other fixed metadata
 * (`extra`), each layer's L1 blocks, its L2 tables and the data they point
 * at. A table that cannot be read claims nothing here; the caller keeps what
 * the damaged bitmap block still says, so that its clusters stay in use.
 * One bit per cluster, as the bitmap itself: 2 MiB per TiB of pool.
 */
export class Claims {
  private readonly bits: Uint8Array;

  constructor(readonly clusters: number) {
    this.bits = new Uint8Array(Math.ceil(clusters / 8));
  }

  add(c: number): void {
    if (c >= 0 && c < this.clusters) this.bits[c >> 3]! |= 1 << (c & 7);
  }

  has(c: number): boolean {
    return c >= 0 && c < this.clusters && (this.bits[c >> 3]! & (1 << (c & 7))) !== 0;
  }
}

export async function mapClaims(store: MetaStore, geo: Geometry, clusters: number, layers: Iterable<Layer>, extra: Iterable<number>): Promise<Claims> {
  const claims = new Claims(clusters);
  for (const c of extra) claims.add(c);
  const { entriesPerL1Block, entriesPerL2: P, entrySize: E } = geo;
  for (const layer of layers) {
    for (let b = 0; b < layer.rec.l1Blocks; b++) {
      const l1c = layer.rec.l1Start + b;
      claims.add(l1c);
      let l1: Buffer;
      try {
        l1 = store.peek(l1c) ?? (await store.load(l1c, BlockType.L1, layer.id));
      } catch {
        continue;
      }
      for (let i = 0; i < entriesPerL1Block; i++) {
        const l2c = readL1(l1, i);
        if (l2c === 0) continue;
        claims.add(l2c);
        let l2: Buffer;
        try {
          l2 = store.peek(l2c) ?? (await store.load(l2c, BlockType.L2, undefined));
        } catch {
          continue;
        }
        for (let e = 0; e < P; e++) {
          const host = readHost(l2, e * E);
          if (host !== 0) claims.add(host);
        }
      }
    }
  }
  return claims;
}

/**
 * The content of bitmap block `index` rebuilt: what the damaged block still
 * says (kept, so that nothing a damaged map may reference becomes free), every
 * cluster the maps claim, and the clusters that are always in use (before the
 * data area, past the end of the pool). Returns the bytes before the trailer
 * and how many bits it set that the damaged block had clear.
 */
export function rebuildBitmapBlock(damaged: Buffer, index: number, header: PoolHeader, claims: Claims): { content: Buffer; restored: number } {
  const C = header.clusterSize;
  const bits = (C - TRAILER) * 8;
  const content = Buffer.alloc(C - TRAILER);
  damaged.copy(content, 0, 0, C - TRAILER);
  let restored = 0;
  const first = index * bits;
  for (let k = 0; k < bits; k++) {
    const c = first + k;
    if (!(c < header.dataStart || c >= header.totalClusters || claims.has(c))) continue;
    const mask = 1 << (k & 7);
    if (content[k >> 3]! & mask) continue;
    content[k >> 3]! |= mask;
    restored++;
  }
  return { content, restored };
}
