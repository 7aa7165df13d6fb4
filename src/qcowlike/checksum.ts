import type { XXHashAPI } from 'xxhash-wasm';
import { loadXxhash, xxhashLoaded } from '../blockdev/xxhash.js';
import { stripeHashable, xxh32Stripes } from './xxh32.js';
import { simdChecksums, xxh32Blocks } from './xxh32-simd.js';

/** Pools await initChecksums() before any I/O so the hot path can hash synchronously. */
export async function initChecksums(): Promise<void> {
  await loadXxhash();
}

function ready(): XXHashAPI {
  const api = xxhashLoaded();
  if (!api) throw new Error('checksums used before initChecksums()');
  return api;
}

const DATA_SEED = 0x53545241;

const one = new Uint32Array(1);

/** 32-bit checksum (XXH32) of a data sub-cluster, kept in its L2 entry. */
export function dataChecksum(buf: Uint8Array): number {
  // Past 16 KiB the WebAssembly loop outruns JavaScript by more than the copy into its memory costs.
  if (buf.length >= 16384 && simdChecksums && buf.length % 16 === 0) {
    xxh32Blocks(buf, buf.length, 1, DATA_SEED, one);
    return one[0]!;
  }
  return stripeHashable(buf) ? xxh32Stripes(buf, DATA_SEED) : ready().h32Raw(buf, DATA_SEED) >>> 0;
}

/** Data checksums of `count` consecutive sub-clusters of `size` bytes, into sums[at…]: one SIMD pass. */
export function dataChecksums(buf: Uint8Array, size: number, count: number, sums: Uint32Array | number[], at = 0): void {
  xxh32Blocks(buf, size, count, DATA_SEED, sums, at);
}

/** 64-bit checksum of a metadata block, journal transaction or catalog. */
export function metaChecksum(buf: Uint8Array): bigint {
  return ready().h64Raw(buf, 0x5354524154414d44n);
}
