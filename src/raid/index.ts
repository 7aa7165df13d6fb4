export { RaidArray, type ArrayGeometry, type ArrayStatus, type MemberSlot, type MemberStatus, type RaidArrayOptions, type RebuildOptions, type RebuildProgress, type ScrubOptions, type ScrubReport } from './array.js';
export { MemberInUseError, MemberTooSmallError } from './create-errors.js';
export { createArray, memberDataNeeded, DEFAULT_CHUNK, DEFAULT_REGION, type CreateArrayOptions, type MemberSpec } from './create.js';
export { assembleArray, type AssembleOptions, type AssembleResult } from './assemble.js';
export type { Mismatch } from './engine.js';
export { levelDescriptor, parseRaidLevel, RAID_LEVELS, type LevelDescriptor, type RaidLevel } from './levels/index.js';
export { DATA_OFFSET } from './superblock.js';
export { parsePendingRepairs, type PendingRepair } from './pending-repairs.js';

export { RaidError, type RaidErrorCode } from './errors.js';
export { examineMemberHeader, type MemberExamination } from './examine.js';
