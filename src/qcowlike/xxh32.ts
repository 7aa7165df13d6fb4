/**
 * xxHash32 over whole 16-byte stripes of a 4-byte-aligned buffer, in plain
 * JavaScript on a Uint32Array view. For data sub-clusters (4 KiB and larger,
 * always whole stripes) this is several times faster than calling into
 * WebAssembly, which copies every input into its own memory first. It gives
 * exactly XXH32's result for inputs whose length is a multiple of 16.
 */
const P1 = 0x9e3779b1 | 0;
const P2 = 0x85ebca77 | 0;
const P3 = 0xc2b2ae3d | 0;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/** True when `xxh32Stripes` can hash this buffer (aligned, whole stripes, at least one). */
export function stripeHashable(buf: Uint8Array): boolean {
  return (buf.byteOffset & 3) === 0 && buf.length >= 16 && (buf.length & 15) === 0;
}

export function xxh32Stripes(buf: Uint8Array, seed: number): number {
  const w = new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2);
  let v1 = (seed + P1 + P2) | 0;
  let v2 = (seed + P2) | 0;
  let v3 = seed | 0;
  let v4 = (seed - P1) | 0;
  for (let i = 0; i < w.length; i += 4) {
    v1 = Math.imul(rotl((v1 + Math.imul(w[i]!, P2)) | 0, 13), P1);
    v2 = Math.imul(rotl((v2 + Math.imul(w[i + 1]!, P2)) | 0, 13), P1);
    v3 = Math.imul(rotl((v3 + Math.imul(w[i + 2]!, P2)) | 0, 13), P1);
    v4 = Math.imul(rotl((v4 + Math.imul(w[i + 3]!, P2)) | 0, 13), P1);
  }
  let h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) | 0;
  h = (h + buf.length) | 0;
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}
