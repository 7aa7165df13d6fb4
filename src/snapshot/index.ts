import type { Pool, Volume, VolumeInfo } from '../qcowlike/index.js';
import type { ChainJobOptions, ChainNode, DepthExtent, DiffExtent, SnapshotInfo, SnapshotRef, TemplateInfo } from './types.js';

export type { ChainJobOptions, ChainNode, ChainProgress, DepthExtent, DiffExtent, SnapshotInfo, SnapshotRef, TemplateInfo } from './types.js';

const pending = (what: string): never => {
  throw new Error(`${what}: not built yet`);
};

/** Freezes each volume's state and puts a new writable layer on top of it, all in one atomic step. */
export async function createSnapshots(pool: Pool, refs: SnapshotRef[]): Promise<SnapshotInfo[]> {
  return pending(`snapshot create ${pool.dev.name} ${refs.length}`);
}
export async function listSnapshots(pool: Pool, volume: string): Promise<SnapshotInfo[]> {
  return pending(`snapshot list ${pool.dev.name} ${volume}`);
}
/** The tree of layers the volume belongs to, from its oldest ancestor. */
export async function chainTree(pool: Pool, volume: string): Promise<ChainNode> {
  return pending(`chain tree ${pool.dev.name} ${volume}`);
}
export async function deleteSnapshot(pool: Pool, ref: SnapshotRef, opts: ChainJobOptions = {}): Promise<{ freedBytes: number }> {
  return pending(`snapshot delete ${pool.dev.name} ${ref.volume} ${opts.rateBytesPerSec}`);
}
/** EBUSY when the volume is open and `force` is not given. */
export async function revertSnapshot(pool: Pool, ref: SnapshotRef, opts: { force?: boolean } = {}): Promise<void> {
  return pending(`snapshot revert ${pool.dev.name} ${ref.volume} ${opts.force}`);
}
export async function cloneVolume(pool: Pool, source: SnapshotRef | { template: string }, name: string): Promise<VolumeInfo> {
  return pending(`clone ${pool.dev.name} ${JSON.stringify(source)} ${name}`);
}
/** Turns a volume into a template: read-only, protected, no longer a volume. */
export async function convertToTemplate(pool: Pool, volume: string): Promise<TemplateInfo> {
  return pending(`template create ${pool.dev.name} ${volume}`);
}
/** A new template from a volume's current state (the volume stays) or from another template. */
export async function templateFrom(pool: Pool, source: { volume: string } | { template: string }, name: string): Promise<TemplateInfo> {
  return pending(`template clone ${pool.dev.name} ${JSON.stringify(source)} ${name}`);
}
export async function deleteTemplate(pool: Pool, name: string): Promise<void> {
  return pending(`template delete ${pool.dev.name} ${name}`);
}
export async function templateInfo(pool: Pool, name: string): Promise<TemplateInfo> {
  return pending(`template info ${pool.dev.name} ${name}`);
}
export async function listTemplates(pool: Pool): Promise<TemplateInfo[]> {
  return pending(`template list ${pool.dev.name}`);
}
/** Copies into the volume everything it reads from below, then cuts it loose from its chain. */
export async function flattenVolume(pool: Pool, volume: string, opts: ChainJobOptions = {}): Promise<void> {
  return pending(`flatten ${pool.dev.name} ${volume} ${opts.rateBytesPerSec}`);
}
/** A read-only view of a snapshot or a template (`allocationDepth` included). */
export async function openFrozen(pool: Pool, source: SnapshotRef | { template: string }): Promise<Volume & { allocationDepth(offset: number, length: number): Promise<DepthExtent[]> }> {
  return pending(`open ${pool.dev.name} ${JSON.stringify(source)}`);
}
/**
 * Ranges that differ between two points of one volume's history: snapshot
 * `from` (null: an empty disk) and snapshot `to` (null: the volume now).
 */
export function diffRanges(pool: Pool, volume: string, from: string | null, to: string | null): AsyncGenerator<DiffExtent> {
  return pending(`diff ${pool.dev.name} ${volume} ${from} ${to}`);
}
/** Cheap, for an export table: every snapshot and template by name, with its size. */
export function frozenRecords(pool: Pool): { snapshots: Array<{ volume: string; name: string; uuid: string; size: number }>; templates: Array<{ name: string; uuid: string; size: number }> } {
  return pending(`records ${pool.dev.name}`);
}
