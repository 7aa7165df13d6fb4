import fc from 'fast-check';
import xxhash from 'xxhash-wasm';
import { describe, expect, it } from 'vitest';
import { stripeHashable, xxh32Stripes } from '../../src/qcowlike/xxh32.js';

describe('xxh32 over stripes', () => {
  it('equals the reference XXH32 for every aligned whole-stripe input', async () => {
    const ref = await xxhash();
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.integer(), fc.integer({ min: 0, max: 3 }), (stripes, seed, shift) => {
        const backing = new Uint8Array(stripes * 16 + 16);
        for (let i = 0; i < backing.length; i++) backing[i] = (i * 31 + seed) & 0xff;
        const buf = backing.subarray(shift * 4, shift * 4 + stripes * 16);
        expect(stripeHashable(buf)).toBe(true);
        expect(xxh32Stripes(buf, seed >>> 0)).toBe(ref.h32Raw(buf, seed >>> 0) >>> 0);
      }),
      { numRuns: 300 },
    );
  });

  it('refuses what it cannot hash exactly', () => {
    const b = Buffer.alloc(4097);
    expect(stripeHashable(b.subarray(1, 4097))).toBe(false);
    expect(stripeHashable(b.subarray(0, 4095))).toBe(false);
    expect(stripeHashable(b.subarray(0, 0))).toBe(false);
  });
});

describe('xxh32 of many blocks at once (SIMD four at a time, the rest one at a time in scalar WebAssembly)', () => {
  it('equals the reference XXH32 of each block, for any count, block size and alignment', async () => {
    const { xxh32Blocks, simdChecksums } = await import('../../src/qcowlike/xxh32-simd.js');
    const ref = await xxhash();
    expect(simdChecksums).toBe(true);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 11 }), fc.constantFrom(16, 64, 4096, 8192, 65536), fc.integer({ min: 0, max: 7 }), fc.integer(), (count, size, shift, seed) => {
        const backing = new Uint8Array(count * size + 8);
        for (let i = 0; i < backing.length; i++) backing[i] = (i * 131 + seed + (i >> 7)) & 0xff;
        const buf = backing.subarray(shift, shift + count * size);
        const sums = new Uint32Array(count + 2);
        xxh32Blocks(buf, size, count, seed >>> 0, sums, 1);
        for (let k = 0; k < count; k++) expect(sums[1 + k]).toBe(ref.h32Raw(buf.subarray(k * size, (k + 1) * size), seed >>> 0) >>> 0);
      }),
      { numRuns: 200 },
    );
  });
});
