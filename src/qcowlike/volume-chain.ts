import type { Catalog } from './catalog.js';
import type { Layer } from './layer.js';

/** What a volume's whole history occupies, and what outside it still reads from it. */
export interface VolumeChain {
  /** The volume's layer, its snapshots' layers and the nameless bases only they use, deepest first. */
  layers: Layer[];
  /** Names outside the chain that read from one of its layers (clones of its snapshots, templates made from them). */
  dependants: string[];
}

/**
 * The layers that go when a volume leaves with all its snapshots (a
 * migration's source): its own, its snapshots', and every nameless base
 * whose children all go too. The layer it was cloned from stays; so does
 * anything another volume or template still reads, which is listed.
 */
export function volumeChain(catalog: Readonly<Catalog>, layers: ReadonlyMap<number, Layer>, volume: string): VolumeChain {
  const v = catalog.volumes.find((x) => x.name === volume);
  if (!v) return { layers: [], dependants: [] };
  const named = new Set<number>([...catalog.volumes.map((x) => x.layer), ...catalog.snapshots.map((x) => x.layer), ...catalog.templates.map((x) => x.layer)]);
  const live = [...layers.values()].filter((l) => !l.rec.reclaiming);
  const childrenOf = (l: Layer): Layer[] => live.filter((c) => c.parent === l);
  const set = new Set<Layer>([v.layer, ...catalog.snapshots.filter((s) => s.volume === volume).map((s) => s.layer)].map((id) => layers.get(id)!).filter((l) => l !== undefined));
  for (let grew = true; grew; ) {
    grew = false;
    for (const l of [...set]) {
      const p = l.parent;
      if (!p || set.has(p) || named.has(p.id)) continue;
      if (childrenOf(p).every((c) => set.has(c))) {
        set.add(p);
        grew = true;
      }
    }
  }
  const dependants: string[] = [];
  for (const l of set) {
    for (const c of childrenOf(l)) {
      if (set.has(c)) continue;
      dependants.push(...namesOf(catalog, c.id, layers));
    }
  }
  const depth = (l: Layer): number => (l.parent ? depth(l.parent) + 1 : 0);
  return { layers: [...set].sort((a, b) => depth(b) - depth(a)), dependants: [...new Set(dependants)].sort() };
}

/** What users call a layer: its volume, snapshot or template names, or what reads through it when it is a nameless base. */
function namesOf(catalog: Readonly<Catalog>, id: number, layers: ReadonlyMap<number, Layer>): string[] {
  const out = [...catalog.volumes.filter((x) => x.layer === id).map((x) => x.name), ...catalog.snapshots.filter((x) => x.layer === id).map((x) => `${x.volume}@${x.name}`), ...catalog.templates.filter((x) => x.layer === id).map((x) => x.name)];
  if (out.length > 0) return out;
  const below = [...layers.values()].filter((l) => !l.rec.reclaiming && l.parent?.id === id);
  return below.flatMap((l) => namesOf(catalog, l.id, layers));
}
