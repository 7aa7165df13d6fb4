import type { LevelDescriptor } from './level.js';

/** Every member holds every chunk: survives the loss of all members but one. */
export const raid1: LevelDescriptor = {
  level: 1,
  kind: 'mirror',
  minMembers: 2,
  parity: 0,
  copies: (members) => members,
  layoutName: (members) => `mirror x${members}`,
};
