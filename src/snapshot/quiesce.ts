import type { Layer } from '../qcowlike/index.js';

/**
 * Holds every cluster of each layer exclusively: requests in flight finish
 * first, new ones wait. A snapshot puts a new top in place while it holds
 * the old one, so each request lands wholly before or wholly after it; the
 * hold lasts one catalog write, not a commit (the commit follows after).
 */
export async function holdWhole(layers: Layer[]): Promise<() => void> {
  const releases: Array<() => void> = [];
  for (const l of [...layers].sort((a, b) => a.id - b.id)) releases.push(await l.lock.acquire(0, Number.MAX_SAFE_INTEGER, true));
  let done = false;
  return () => {
    if (done) return;
    done = true;
    for (const r of releases) r();
  };
}
