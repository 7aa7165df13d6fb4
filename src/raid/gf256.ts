/**
 * Arithmetic in GF(2^8) with the polynomial x^8+x^4+x^3+x^2+1 (0x11d) and
 * generator 2: the field Linux md's RAID 6 uses, so Q means the same thing here.
 */
export const GF_POLY = 0x11d;

/** exp[i] = 2^i, doubled in length so exp[log a + log b] needs no modulo. */
export const GF_EXP = new Uint8Array(512);
export const GF_LOG = new Uint8Array(256);

{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    GF_EXP[i] = x;
    GF_LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= GF_POLY;
  }
  for (let i = 255; i < 512; i++) GF_EXP[i] = GF_EXP[i - 255]!;
}

export function gfMul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return GF_EXP[GF_LOG[a]! + GF_LOG[b]!]!;
}

export function gfInv(a: number): number {
  if (a === 0) throw new RangeError('zero has no inverse in GF(2^8)');
  return GF_EXP[255 - GF_LOG[a]!]!;
}

/** 2^i for any integer i (negative exponents give inverses). */
export function gfPow2(i: number): number {
  return GF_EXP[((i % 255) + 255) % 255]!;
}

const tables: Array<Uint8Array | undefined> = new Array(256);

/** The 256-byte table of c·x for every x; built once per constant. */
export function gfMulTable(c: number): Uint8Array {
  let t = tables[c];
  if (!t) {
    t = new Uint8Array(256);
    for (let x = 0; x < 256; x++) t[x] = gfMul(c, x);
    tables[c] = t;
  }
  return t;
}
