import { gfInv, gfPow2 } from './gf256.js';
import { computeP, computePQ, mulAdd2, mulInPlace, xorInto } from './syndrome.js';

/**
 * Fills in the blocks of one stripe segment that could not be read. `blocks`
 * holds the d data blocks, then P, then Q (RAID 6); `missing` lists indexes
 * into it (at most `parity` of them). Every block is at least `len` bytes;
 * missing ones are overwritten. `s1`, `s2` are scratch blocks of `len` bytes.
 */
export function reconstruct(blocks: Uint8Array[], d: number, parity: 1 | 2, missing: readonly number[], len: number, s1: Uint8Array, s2: Uint8Array): void {
  if (missing.length === 0) return;
  if (missing.length > parity) throw new Error(`cannot rebuild ${missing.length} blocks of a stripe with ${parity} parity`);
  const data = blocks.slice(0, d);
  const lostData = missing.filter((i) => i < d).sort((a, b) => a - b);
  const pIdx = d;
  const qIdx = d + 1;
  const pLost = missing.includes(pIdx);
  const qLost = parity === 2 && missing.includes(qIdx);

  if (lostData.length === 0) {
    if (parity === 1) computeP(data, blocks[pIdx]!, len);
    else computePQ(data, pLost ? blocks[pIdx]! : s1, qLost ? blocks[qIdx]! : s2, len);
    return;
  }

  if (lostData.length === 1 && !pLost) {
    // D_a = P ^ Σ_{i≠a} D_i, then Q again if it was lost too.
    const a = lostData[0]!;
    const sources = [blocks[pIdx]!];
    for (let i = 0; i < d; i++) if (i !== a) sources.push(blocks[i]!);
    computeP(sources, blocks[a]!, len);
    if (qLost) computePQ(data, s1, blocks[qIdx]!, len);
    return;
  }

  if (lostData.length === 1) {
    // P lost too: D_a = (Q ^ Q with D_a = 0) · 2^−a.
    const a = lostData[0]!;
    const out = blocks[a]!;
    out.fill(0, 0, len);
    computePQ(data, s1, s2, len);
    out.set(blocks[qIdx]!.subarray(0, len));
    xorInto(out, s2, len);
    mulInPlace(out, gfInv(gfPow2(a)), len);
    computeP(data, blocks[pIdx]!, len);
    return;
  }

  // Two data blocks a < b (Linux raid6 recov): with Pxy, Qxy the syndromes
  // computed with both zeroed, px = P ^ Pxy = D_a ^ D_b and
  // qx = Q ^ Qxy = 2^a·D_a ^ 2^b·D_b, so
  // D_b = px / (2^(b−a) ^ 1) ^ qx / (2^a ^ 2^b) and D_a = D_b ^ px.
  const [a, b] = lostData as [number, number];
  blocks[a]!.fill(0, 0, len);
  blocks[b]!.fill(0, 0, len);
  computePQ(data, s1, s2, len);
  xorInto(s1, blocks[pIdx]!, len);
  xorInto(s2, blocks[qIdx]!, len);
  const pbmul = gfInv(gfPow2(b - a) ^ 1);
  const qmul = gfInv(gfPow2(a) ^ gfPow2(b));
  mulAdd2(blocks[b]!, pbmul, s1, qmul, s2, len);
  blocks[a]!.set(blocks[b]!.subarray(0, len));
  xorInto(blocks[a]!, s1, len);
}
