import type { LevelDescriptor } from './level.js';

/** Block-interleaved parity, left-symmetric: survives the loss of one member. */
export const raid5: LevelDescriptor = {
  level: 5,
  kind: 'parity',
  minMembers: 3,
  parity: 1,
  copies: () => 1,
  layoutName: () => 'left-symmetric',
};
