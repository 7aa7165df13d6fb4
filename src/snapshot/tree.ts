import type { Layer, Pool } from '../qcowlike/index.js';
import { layerKind, layerName, volumeRecord } from './names.js';
import type { ChainNode } from './types.js';

/** The tree of layers a volume belongs to, from its oldest ancestor down, children oldest first. */
export async function chainTree(pool: Pool, volume: string): Promise<ChainNode> {
  let root = pool.layerById(volumeRecord(pool, volume).layer);
  while (root.parent) root = root.parent;
  return node(pool, root);
}

async function node(pool: Pool, layer: Layer): Promise<ChainNode> {
  const kids = pool.childrenOf(layer).sort((a, b) => a.rec.created.localeCompare(b.rec.created) || a.id - b.id);
  const children: ChainNode[] = [];
  for (const k of kids) children.push(await node(pool, k));
  const name = layerName(pool, layer);
  return { kind: layerKind(pool, layer), name: name ?? '(deleted)', layer: layer.id, created: createdOf(pool, layer), exclusiveBytes: await pool.exclusiveBytes(layer), children };
}

/** When the point in time a layer stands for was taken: a snapshot's or template's creation, else the layer's. */
function createdOf(pool: Pool, layer: Layer): string {
  const c = pool.catalogNow;
  return c.snapshots.find((s) => s.layer === layer.id)?.created ?? c.templates.find((t) => t.layer === layer.id)?.created ?? layer.rec.created;
}
