import type { Layer, Pool } from '../qcowlike/index.js';

/**
 * Gives a volume a new writable top that shares `base`'s map (its old top
 * after a snapshot, a snapshot after a revert) and moves the volume's open
 * handles onto it. Synchronous, inside a chain change, with `base`'s L1 held
 * and the volume's old top held whole (holdWhole), so no request is split.
 */
export function putNewTop(pool: Pool, volume: { name: string; layer: number }, base: Layer): Layer {
  const next = pool.branchLayer(base, false);
  volume.layer = next.id;
  for (const h of pool.handlesOf(volume.name)) h.switchTo(next);
  return next;
}
