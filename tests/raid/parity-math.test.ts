import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { gfInv, gfMul, gfPow2 } from '../../src/raid/gf256.js';
import { reconstruct } from '../../src/raid/reconstruct.js';
import { simdAvailable } from '../../src/raid/simd.js';
import { computeP, computePQ, xorQTerm } from '../../src/raid/syndrome.js';
import { propertyRuns } from '../support/scratch.js';

/** Q the slow way: one byte at a time, straight from the definition Σ 2^i·D_i. */
function naivePQ(data: Uint8Array[], len: number): [Uint8Array, Uint8Array] {
  const p = new Uint8Array(len);
  const q = new Uint8Array(len);
  data.forEach((d, i) => {
    for (let k = 0; k < len; k++) {
      p[k] ^= d[k]!;
      q[k] ^= gfMul(gfPow2(i), d[k]!);
    }
  });
  return [p, q];
}

/** Blocks carved out of one buffer at `shift`, so unaligned views get exercised too. */
function blocks(count: number, len: number, shift: number, seed: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let x = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    const b = new Uint8Array(len + shift).subarray(shift);
    for (let k = 0; k < len; k++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      b[k] = x & 0xff;
    }
    out.push(b);
  }
  return out;
}

/** computePQ and computeP equal the byte-by-byte definition; returns the Q computed. */
function expectParityOfDefinition(data: Uint8Array[], len: number): Uint8Array {
  const p = new Uint8Array(len);
  const q = new Uint8Array(len);
  computePQ(data, p, q, len);
  const [np, nq] = naivePQ(data, len);
  expect(Buffer.compare(p, np)).toBe(0);
  expect(Buffer.compare(q, nq)).toBe(0);
  const p2 = new Uint8Array(len);
  computeP(data, p2, len);
  expect(Buffer.compare(p2, np)).toBe(0);
  return q;
}

describe('GF(2^8) and parity arithmetic', () => {
  it('field identities hold for the 0x11d field with generator 2', () => {
    expect(gfPow2(8)).toBe(0x1d);
    for (let a = 1; a < 256; a++) expect(gfMul(a, gfInv(a))).toBe(1);
    expect(new Set(Array.from({ length: 255 }, (_, i) => gfPow2(i))).size).toBe(255);
  });

  it('word-wide P and Q equal the byte-by-byte definition, aligned or not', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 12 }), fc.integer({ min: 0, max: 600 }), fc.integer({ min: 0, max: 3 }), fc.integer(), (d, len, shift, seed) => {
        const data = blocks(d, len, shift, seed);
        const q = expectParityOfDefinition(data, len);
        // Q updated by one block's term equals Q recomputed with that block changed.
        const i = seed % d >= 0 ? seed % d : -(seed % d);
        const delta = blocks(1, len, 0, seed + 7)[0]!;
        xorQTerm(q, delta, i, len, new Uint8Array(len));
        for (let k = 0; k < len; k++) data[i]![k] ^= delta[k]!;
        expect(Buffer.compare(q, naivePQ(data, len)[1])).toBe(0);
      }),
      { numRuns: propertyRuns(300) },
    );
  });

  it('the WebAssembly SIMD kernel agrees with the definition on large blocks, tails included', () => {
    expect(simdAvailable).toBe(true);
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 8 }), fc.integer({ min: 4096, max: 20_000 }), fc.integer({ min: 0, max: 3 }), fc.integer(), (d, len, shift, seed) => {
        const data = blocks(d, len, shift, seed);
        expectParityOfDefinition(data, len);
      }),
      { numRuns: propertyRuns(40, 10) },
    );
  });

  it('rebuilds any one (RAID 5) or any two (RAID 6) lost blocks of a stripe, by the JS and the SIMD paths', () => {
    for (const [parity, d, len] of [1, 2].flatMap((parity) => [2, 3, 4, 5, 6].flatMap((d) => [67, 9000 + d].map((len) => [parity as 1 | 2, d, len] as const)))) {
      {
        const data = blocks(d, len, 0, d * 31 + parity);
        const p = new Uint8Array(len);
        const q = new Uint8Array(len);
        computePQ(data, p, q, len);
        const whole = parity === 1 ? [...data, p] : [...data, p, q];
        const n = whole.length;
        const sets: number[][] = [];
        for (let a = 0; a < n; a++) {
          sets.push([a]);
          if (parity === 2) for (let b = a + 1; b < n; b++) sets.push([a, b]);
        }
        for (const missing of sets) {
          const work = whole.map((b) => Uint8Array.from(b));
          for (const j of missing) work[j]!.fill(0x5a);
          reconstruct(work, d, parity, missing, len, new Uint8Array(len), new Uint8Array(len));
          work.forEach((b, j) => expect(Buffer.compare(b, whole[j]!), `d=${d} parity=${parity} missing=${missing} block ${j}`).toBe(0));
        }
      }
    }
  });
});
