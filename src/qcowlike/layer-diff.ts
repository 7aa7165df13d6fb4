import type { PoolCore } from './core.js';
import { ENTRY_ALLOC, ENTRY_SUMS, readHost } from './geometry.js';
import type { EntryRef, Layer } from './layer.js';

export interface LayerDiffExtent {
  offset: number;
  length: number;
  kind: 'data' | 'zero';
}

/**
 * The ranges where `b` may read differently from `a` (null: a disk of
 * zeroes), from the maps alone. Tables both layers share are skipped whole,
 * so a diff costs what changed, not the volume's size. A sub-cluster is the
 * same when both map it to the same host cluster with the same checksum:
 * a cluster mapped by two layers is never written in place (docs/FORMAT.md).
 */
export async function* diffLayers(core: PoolCore, a: Layer | null, b: Layer): AsyncGenerator<LayerDiffExtent> {
  const { clusterSize: C, subclusterSize: S, subclusters: n, entriesPerL2: P, entrySize: E } = core.geo;
  const size = b.size;
  let run: LayerDiffExtent | undefined;
  const out: LayerDiffExtent[] = [];
  const add = (offset: number, length: number, kind: 'data' | 'zero'): void => {
    const end = Math.min(size, offset + length);
    if (end <= offset) return;
    if (run && run.offset + run.length === offset && run.kind === kind) run.length = end - run.offset;
    else {
      if (run) out.push(run);
      run = { offset, length: end - offset, kind };
    }
  };
  const clusters = Math.ceil(size / C);
  for (let first = 0; first < clusters; first += P) {
    await b.ensure(first);
    if (a && first * C < a.size) await a.ensure(first);
    const tb = b.tableAt(first);
    const ta = a && first * C < a.size ? a.tableAt(first) : 0;
    if (tb === ta) continue;
    const rb: EntryRef | null = tb ? await b.lookup(first) : null;
    const ra: EntryRef | null = ta && a ? await a.lookup(first) : null;
    const last = Math.min(clusters, first + P);
    for (let vc = first; vc < last; vc++) {
      const at = (vc - first) * E;
      const ab = rb ? rb.l2.readUInt32LE(at + ENTRY_ALLOC) : 0;
      const aa = ra && vc * C < a!.size ? ra.l2.readUInt32LE(at + ENTRY_ALLOC) : 0;
      if (ab === 0 && aa === 0) continue;
      const same = ra && rb && readHost(ra.l2, at) === readHost(rb.l2, at);
      for (let i = 0; i < n; i++) {
        const bit = 1 << i;
        if (!(ab & bit) && !(aa & bit)) continue;
        if (same && ab & bit && aa & bit && ra.l2.readUInt32LE(at + ENTRY_SUMS + 4 * i) === rb.l2.readUInt32LE(at + ENTRY_SUMS + 4 * i)) continue;
        add(vc * C + i * S, S, ab & bit ? 'data' : 'zero');
      }
    }
    yield* out.splice(0);
  }
  if (run) yield run;
}
