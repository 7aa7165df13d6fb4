export { Pool, MAX_VOLUME_SIZE } from './pool.js';
export { PoolError, ChecksumError } from './errors.js';
export { isValidName, NAME_RULE } from './names.js';
export type { CheckProblem, CheckReport, LayerInfo, PoolCreateOptions, PoolOpenOptions, PoolStats, Preallocation, Volume, VolumeInfo } from './types.js';
