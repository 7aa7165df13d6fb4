export type { BlockDevice, Extent, Redundancy, WriteOptions, WriteZeroesOptions } from './device.js';
export { checkRange, checkWritable } from './device.js';
export { BlockDeviceError, fromSystemError, type BlockErrorCode, type BlockOp } from './errors.js';
export { FileDevice, type FileCreateOptions, type FileOpenOptions, type FileIoMode } from './file.js';
export { MemoryDevice, type MemoryDeviceOptions } from './memory.js';
export { FaultyDevice, type FaultRule, type FaultyDeviceOptions } from './faulty.js';
export { CrashSimulator, type CrashReport } from './crash.js';
export { Rng } from './rng.js';
