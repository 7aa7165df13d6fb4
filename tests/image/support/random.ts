/** A deterministic generator (mulberry32), so a failing layout can be made again. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Bytes that deflate well but not to nothing: short words from a small alphabet. */
export function compressible(length: number, rand: () => number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = rand() < 0.1 ? 32 : 97 + Math.floor(rand() * 6);
  return out;
}
