import type { LevelDescriptor } from './level.js';

/** Striping, no redundancy: chunk c on member c mod n. Survives no loss. */
export const raid0: LevelDescriptor = {
  level: 0,
  kind: 'mirror',
  minMembers: 1,
  parity: 0,
  copies: () => 1,
  layoutName: () => 'striped',
};
