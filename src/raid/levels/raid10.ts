import type { LevelDescriptor } from './level.js';

/**
 * md's near layout with k copies (default 2): survives any loss that leaves one
 * replica of every chunk, at least k−1 members.
 */
export const raid10: LevelDescriptor = {
  level: 10,
  kind: 'mirror',
  minMembers: 2,
  parity: 0,
  copies: (_members, configured) => configured,
  layoutName: (_members, copies) => `near=${copies}`,
};
