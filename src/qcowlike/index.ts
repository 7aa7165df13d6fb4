export { Pool, MAX_VOLUME_SIZE } from './pool.js';
export { PoolError, ChecksumError } from './errors.js';
export { isValidName, NAME_RULE } from './names.js';
export type { CheckProblem, CheckReport, LayerInfo, PoolCreateOptions, PoolOpenOptions, PoolStats, Preallocation, Volume, VolumeInfo } from './types.js';
export { Layer } from './layer.js';
export { VolumeHandle } from './volume.js';
export { diffLayers, type LayerDiffExtent } from './layer-diff.js';
export type { Catalog, CatalogSnapshot, CatalogTemplate, CatalogVolume, JsonValue, TemplateSettings } from './catalog.js';
export { MAX_SETTINGS_BYTES } from './catalog.js';
