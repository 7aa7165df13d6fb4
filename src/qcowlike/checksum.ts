import xxhash, { type XXHashAPI } from 'xxhash-wasm';
import { stripeHashable, xxh32Stripes } from './xxh32.js';

/**
 * xxHash through WebAssembly. The module is instantiated once; pools await
 * initChecksums() before any I/O so the hot path can hash synchronously.
 */
let api: XXHashAPI | undefined;
let loading: Promise<XXHashAPI> | undefined;

export async function initChecksums(): Promise<void> {
  loading ??= xxhash();
  api = await loading;
}

function ready(): XXHashAPI {
  if (!api) throw new Error('checksums used before initChecksums()');
  return api;
}

const DATA_SEED = 0x53545241;

/** 32-bit checksum (XXH32) of a data sub-cluster, kept in its L2 entry. */
export function dataChecksum(buf: Uint8Array): number {
  return stripeHashable(buf) ? xxh32Stripes(buf, DATA_SEED) : ready().h32Raw(buf, DATA_SEED) >>> 0;
}

/** 64-bit checksum of a metadata block, journal transaction or catalog. */
export function metaChecksum(buf: Uint8Array): bigint {
  return ready().h64Raw(buf, 0x5354524154414d44n);
}
