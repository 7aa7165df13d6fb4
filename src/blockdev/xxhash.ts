import xxhash, { type XXHashAPI } from 'xxhash-wasm';

/**
 * The one xxhash-wasm instance of the process. Instantiating the module is
 * asynchronous, so each user awaits loadXxhash() once before its hot path and
 * then hashes synchronously through xxhashReady().
 */
let api: XXHashAPI | undefined;
let loading: Promise<XXHashAPI> | undefined;

export async function loadXxhash(): Promise<XXHashAPI> {
  loading ??= xxhash();
  api = await loading;
  return api;
}

/** The loaded instance, or undefined before loadXxhash() resolved. */
export function xxhashLoaded(): XXHashAPI | undefined {
  return api;
}
