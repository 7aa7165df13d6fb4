import { BASE_ALLOCATION } from './constants.js';

/**
 * The metadata contexts this server offers on every export, and how the
 * queries of LIST_META_CONTEXT and SET_META_CONTEXT pick among them. The
 * query rules are qemu-nbd's (nbd/server.c), so a client that works against
 * qemu-nbd sees the same answers here.
 */

export const ALLOCATION_DEPTH = 'qemu:allocation-depth';

export type MetaContextName = typeof BASE_ALLOCATION | typeof ALLOCATION_DEPTH;

export interface MetaContext {
  /** Opaque to clients; fixed here so a reply names the same context on every connection. */
  id: number;
  name: MetaContextName;
}

/** In the order replies list them (and block status chunks follow). */
export const META_CONTEXTS: readonly MetaContext[] = [
  { id: 1, name: BASE_ALLOCATION },
  { id: 2, name: ALLOCATION_DEPTH },
];

/**
 * The contexts a LIST (`listing`) or SET names with these queries, in
 * reply order, each once. LIST with no query lists all; an empty leaf
 * (`base:`, `qemu:`) is a wildcard for LIST and selects nothing in SET;
 * unknown namespaces and leaves are ignored, as the protocol asks.
 */
export function matchMetaContexts(queries: readonly string[], listing: boolean): MetaContext[] {
  if (listing && queries.length === 0) return [...META_CONTEXTS];
  const picked = new Set<MetaContextName>();
  for (const q of queries) {
    for (const c of META_CONTEXTS) {
      if (q === c.name || (listing && q === namespaceOf(c.name))) picked.add(c.name);
    }
  }
  return META_CONTEXTS.filter((c) => picked.has(c.name));
}

/** `base:` of `base:allocation`: the wildcard a listing answers with every context of the namespace. */
function namespaceOf(name: string): string {
  return name.slice(0, name.indexOf(':') + 1);
}
