import { gfMulTable } from './gf256.js';

/**
 * Parity over large buffers. P is plain XOR; Q = Σ 2^i·D_i in GF(2^8), by
 * Horner's rule from the last data block down. Both run on 32-bit words: a
 * packed word of four bytes is multiplied by 2 with masks (Linux raid6's "int"
 * code): shift each byte left, and xor 0x1d into the bytes whose top bit fell
 * out. Buffers whose start is not 4-byte aligned take the byte path.
 */

function isAligned(bufs: readonly Uint8Array[]): boolean {
  for (const b of bufs) if ((b.byteOffset & 3) !== 0) return false;
  return true;
}

function words(b: Uint8Array, len: number): Uint32Array {
  return new Uint32Array(b.buffer, b.byteOffset, len >>> 2);
}

const MUL2 = gfMulTable(2);

/** dst[0..len) ^= src[0..len) */
export function xorInto(dst: Uint8Array, src: Uint8Array, len: number): void {
  let start = 0;
  if (((dst.byteOffset | src.byteOffset) & 3) === 0) {
    const d = words(dst, len);
    const s = words(src, len);
    const n = d.length;
    for (let i = 0; i < n; i++) d[i] ^= s[i]!;
    start = n << 2;
  }
  for (let i = start; i < len; i++) dst[i] ^= src[i]!;
}

/** p = D_0 ^ D_1 ^ … over len bytes. */
export function computeP(data: readonly Uint8Array[], p: Uint8Array, len: number): void {
  p.set(data[0]!.subarray(0, len));
  for (let z = 1; z < data.length; z++) xorInto(p, data[z]!, len);
}

/** p = Σ D_i, q = Σ 2^i·D_i over len bytes. */
export function computePQ(data: readonly Uint8Array[], p: Uint8Array, q: Uint8Array, len: number): void {
  const last = data.length - 1;
  p.set(data[last]!.subarray(0, len));
  q.set(data[last]!.subarray(0, len));
  let start = 0;
  if (isAligned(data) && isAligned([p, q])) {
    const pw = words(p, len);
    const qw = words(q, len);
    const n = pw.length;
    for (let z = last - 1; z >= 0; z--) {
      const dw = words(data[z]!, len);
      for (let i = 0; i < n; i++) {
        const w = qw[i]!;
        const d = dw[i]!;
        qw[i] = (((w & 0x7f7f7f7f) << 1) ^ Math.imul((w >>> 7) & 0x01010101, 0x1d)) ^ d;
        pw[i] ^= d;
      }
    }
    start = n << 2;
  }
  if (start < len) {
    for (let z = last - 1; z >= 0; z--) {
      const d = data[z]!;
      for (let i = start; i < len; i++) {
        q[i] = MUL2[q[i]!]! ^ d[i]!;
        p[i] ^= d[i]!;
      }
    }
  }
}

/** q ^= 2^index·d for one data block: the Q term of block `index`. */
export function xorQTerm(q: Uint8Array, d: Uint8Array, index: number, len: number, scratch: Uint8Array): void {
  if (index === 0) return xorInto(q, d, len);
  scratch.set(d.subarray(0, len));
  let start = 0;
  if (isAligned([scratch])) {
    const sw = words(scratch, len);
    const n = sw.length;
    for (let k = 0; k < index; k++) {
      for (let i = 0; i < n; i++) {
        const w = sw[i]!;
        sw[i] = ((w & 0x7f7f7f7f) << 1) ^ Math.imul((w >>> 7) & 0x01010101, 0x1d);
      }
    }
    start = n << 2;
  }
  for (let k = 0; k < index; k++) for (let i = start; i < len; i++) scratch[i] = MUL2[scratch[i]!]!;
  xorInto(q, scratch, len);
}

/** buf = c·buf over len bytes. */
export function mulInPlace(buf: Uint8Array, c: number, len: number): void {
  const t = gfMulTable(c);
  for (let i = 0; i < len; i++) buf[i] = t[buf[i]!]!;
}

/** dst = a·x ^ b·y over len bytes (the two-data-block RAID 6 solve). */
export function mulAdd2(dst: Uint8Array, a: number, x: Uint8Array, b: number, y: Uint8Array, len: number): void {
  const ta = gfMulTable(a);
  const tb = gfMulTable(b);
  for (let i = 0; i < len; i++) dst[i] = ta[x[i]!]! ^ tb[y[i]!]!;
}
