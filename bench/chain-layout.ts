import { Rng } from '../src/blockdev/index.js';

/**
 * The data layout of the chain-depth benchmark: the volume's blocks (of
 * `grain` bytes) are dealt out at random to `depth` layers, an equal share
 * each, so that every block is written exactly once and the top of the chain
 * must find its data in every layer. Strata and qcow2 get the same layout
 * from the same seed.
 */
export interface Run {
  /** First block of the run. */
  block: number;
  /** Adjacent blocks of the same layer, written as one request. */
  count: number;
}

/** Layer k's runs, in block order, for k = 0 (oldest) .. depth-1 (the top). */
export function sliceRuns(blocks: number, depth: number, seed: number): Run[][] {
  if (!Number.isSafeInteger(blocks) || blocks < 1) throw new Error(`a chain needs at least one block (got ${blocks})`);
  if (!Number.isSafeInteger(depth) || depth < 1 || depth > blocks || depth > 65535) throw new Error(`depth ${depth} must lie between 1 and the number of blocks (${blocks})`);
  const order = new Uint32Array(blocks);
  for (let i = 0; i < blocks; i++) order[i] = i;
  const rng = new Rng(seed);
  for (let i = blocks - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  // Position i of the shuffled order goes to layer floor(i·depth/blocks): shares differ by at most one block.
  const layerOf = new Uint16Array(blocks);
  for (let i = 0; i < blocks; i++) layerOf[order[i]!] = Math.floor((i * depth) / blocks);
  const runs: Run[][] = Array.from({ length: depth }, () => []);
  for (let b = 0; b < blocks; ) {
    const layer = layerOf[b]!;
    let e = b + 1;
    while (e < blocks && layerOf[e] === layer) e++;
    runs[layer]!.push({ block: b, count: e - b });
    b = e;
  }
  return runs;
}

/** The byte every block of layer k is filled with: never 0, so a block read from nowhere shows. */
export function layerPattern(layer: number): number {
  return (layer % 255) + 1;
}
