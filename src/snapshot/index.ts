/**
 * Chain operations: snapshots, linked clones, templates, flatten, diffs.
 * Each is a few catalog changes over the format's shared maps
 * (src/qcowlike: branchLayer, settleLayer, materialize); docs/FORMAT.md says
 * how maps are shared and why reads never walk the chain.
 */
export { createSnapshots, deleteSnapshot, listSnapshots, revertSnapshot, snapshotInfo } from './snapshots.js';
export { cloneVolume, flattenVolume } from './clones.js';
export { convertToTemplate, deleteTemplate, listTemplates, templateFrom, templateInfo } from './templates.js';
export { checkSettings } from './template-settings.js';
export { diffRanges, frozenRecords, openFrozen } from './frozen.js';
export { chainTree } from './tree.js';
export type { ChainJobOptions, ChainNode, ChainProgress, DepthExtent, DiffExtent, SnapshotInfo, SnapshotRef, TemplateInfo } from './types.js';
