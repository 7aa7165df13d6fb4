import { gfMulTable } from './gf256.js';
import { simdMul, simdParity } from './simd.js';

/** Below this the copy into WebAssembly memory costs more than SIMD saves. */
const SIMD_MIN = 4096;

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
  const body = len & ~15;
  if (body >= SIMD_MIN && simdParity(data, p, undefined, body)) {
    for (let i = body; i < len; i++) {
      let v = 0;
      for (const d of data) v ^= d[i]!;
      p[i] = v;
    }
    return;
  }
  p.set(data[0]!.subarray(0, len));
  for (let z = 1; z < data.length; z++) xorInto(p, data[z]!, len);
}

/**
 * p = Σ D_i, q = Σ 2^i·D_i over len bytes. Data blocks are taken two per
 * pass (q = 2·(2·q ^ D_z) ^ D_{z−1}), which halves the passes over P and Q:
 * measured ~25% faster than one block per pass.
 */
export function computePQ(data: readonly Uint8Array[], p: Uint8Array, q: Uint8Array, len: number): void {
  const last = data.length - 1;
  let start = 0;
  const body = len & ~15;
  if (body >= SIMD_MIN && simdParity(data, p, q, body)) start = body;
  else if (isAligned(data) && isAligned([p, q])) {
    const pw = words(p, len);
    const qw = words(q, len);
    const n = pw.length;
    let z = last;
    if ((data.length & 1) === 0) {
      const a = words(data[z]!, len);
      const b = words(data[z - 1]!, len);
      for (let i = 0; i < n; i++) {
        const x = a[i]!;
        const y = b[i]!;
        qw[i] = ((x & 0x7f7f7f7f) << 1) ^ Math.imul((x >>> 7) & 0x01010101, 0x1d) ^ y;
        pw[i] = x ^ y;
      }
      z -= 2;
    } else {
      pw.set(words(data[z]!, len));
      qw.set(words(data[z]!, len));
      z -= 1;
    }
    for (; z >= 1; z -= 2) {
      const a = words(data[z]!, len);
      const b = words(data[z - 1]!, len);
      for (let i = 0; i < n; i++) {
        const x = a[i]!;
        const y = b[i]!;
        let w = qw[i]!;
        w = ((w & 0x7f7f7f7f) << 1) ^ Math.imul((w >>> 7) & 0x01010101, 0x1d) ^ x;
        qw[i] = ((w & 0x7f7f7f7f) << 1) ^ Math.imul((w >>> 7) & 0x01010101, 0x1d) ^ y;
        pw[i] ^= x ^ y;
      }
    }
    start = n << 2;
  }
  if (start < len) {
    for (let i = start; i < len; i++) {
      let pv = data[last]![i]!;
      let qv = pv;
      for (let z = last - 1; z >= 0; z--) {
        const d = data[z]![i]!;
        qv = MUL2[qv]! ^ d;
        pv ^= d;
      }
      p[i] = pv;
      q[i] = qv;
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

/**
 * Multiplying by a constant goes two bytes at a time through a 64 Ki-entry
 * table (128 KiB, built on first use, a few kept): half the lookups of the
 * byte table, about twice as fast on these machines.
 */
const wideTables = new Map<number, Uint16Array>();
function wideTable(c: number): Uint16Array {
  let t = wideTables.get(c);
  if (!t) {
    const b = gfMulTable(c);
    t = new Uint16Array(65536);
    for (let x = 0; x < 65536; x++) t[x] = b[x & 0xff]! | (b[x >>> 8]! << 8);
    if (wideTables.size >= 16) wideTables.delete(wideTables.keys().next().value!);
    wideTables.set(c, t);
  }
  return t;
}

function halves(b: Uint8Array, len: number): Uint16Array {
  return new Uint16Array(b.buffer, b.byteOffset, len >>> 1);
}

/** buf = c·buf over len bytes. */
export function mulInPlace(buf: Uint8Array, c: number, len: number): void {
  let start = 0;
  const body = len & ~15;
  if (body >= SIMD_MIN && simdMul(buf, gfMulTable(c), buf, undefined, undefined, body)) start = body;
  else if ((buf.byteOffset & 1) === 0) {
    const t = wideTable(c);
    const h = halves(buf, len);
    for (let i = 0; i < h.length; i++) h[i] = t[h[i]!]!;
    start = h.length << 1;
  }
  const t8 = gfMulTable(c);
  for (let i = start; i < len; i++) buf[i] = t8[buf[i]!]!;
}

/** dst = a·x ^ b·y over len bytes (the two-data-block RAID 6 solve). */
export function mulAdd2(dst: Uint8Array, a: number, x: Uint8Array, b: number, y: Uint8Array, len: number): void {
  let start = 0;
  const body = len & ~15;
  if (body >= SIMD_MIN && simdMul(dst, gfMulTable(a), x, gfMulTable(b), y, body)) start = body;
  else if (((dst.byteOffset | x.byteOffset | y.byteOffset) & 1) === 0) {
    const ta = wideTable(a);
    const tb = wideTable(b);
    const dh = halves(dst, len);
    const xh = halves(x, len);
    const yh = halves(y, len);
    for (let i = 0; i < dh.length; i++) dh[i] = ta[xh[i]!]! ^ tb[yh[i]!]!;
    start = dh.length << 1;
  }
  const ta8 = gfMulTable(a);
  const tb8 = gfMulTable(b);
  for (let i = start; i < len; i++) dst[i] = ta8[x[i]!]! ^ tb8[y[i]!]!;
}
