import type { TemplateSettings } from '../qcowlike/index.js';

/**
 * What chain operations take and give. A snapshot is named `volume@name`; a
 * template by its own name; both are frozen layers that volumes (linked
 * clones) and further snapshots may depend on.
 */
export interface SnapshotRef {
  volume: string;
  snapshot: string;
}

export interface SnapshotInfo {
  volume: string;
  name: string;
  /** Stays with the snapshot for life: a diff stream names its base by it. */
  uuid: string;
  created: string;
  size: number;
  layer: number;
  /** Bytes held by this snapshot alone: what deleting it gives back. From metadata only. */
  exclusiveBytes: number;
  /** Volumes, snapshots and templates that read through this snapshot (`vol`, `vol@snap`, `tmpl`). */
  dependants: string[];
}

export interface TemplateInfo {
  name: string;
  uuid: string;
  created: string;
  size: number;
  layer: number;
  /** Bytes held by the template's own layer. */
  allocatedBytes: number;
  /** What it was made from (`vol`, `vol@snap`, `tmpl`), or null. */
  origin: string | null;
  /** Volumes and templates cloned from it (directly or through their snapshots). */
  dependants: string[];
  /** The virtual machine an imported package described (name, OS, CPUs, memory, disks, networks), or null. */
  settings: TemplateSettings | null;
}

/** One node of the tree `snapshot list` draws: the chain a volume belongs to, oldest layer first. */
export interface ChainNode {
  /** `base` is a deleted snapshot still shared by several children (its space stays until one remains). */
  kind: 'volume' | 'snapshot' | 'template' | 'base';
  /** `vol`, `vol@snap`, `tmpl`, or `(deleted)` for a base. */
  name: string;
  layer: number;
  created: string;
  exclusiveBytes: number;
  children: ChainNode[];
}

export interface ChainProgress {
  /** Bytes of virtual space (or tables' worth of it) dealt with so far, and in all. */
  done: number;
  total: number;
}

/** Long chain operations (delete's merge, flatten) run as jobs: progress, a rate limit, cancel. */
export interface ChainJobOptions {
  onProgress?(p: ChainProgress): void;
  /** Most bytes of data copied (or of virtual space merged) per second; unlimited when absent. */
  rateBytesPerSec?: number;
  signal?: AbortSignal;
}

/** A changed range between two points of a volume's history, from metadata alone. */
export interface DiffExtent {
  offset: number;
  length: number;
  /** `zero`: reads as zeroes at the newer point (a discard or a hole). */
  kind: 'data' | 'zero';
}

/** One run of `qemu:allocation-depth`: 0 = unallocated in every layer, 1 = the top layer, 2 = its parent … */
export interface DepthExtent {
  offset: number;
  length: number;
  depth: number;
}
