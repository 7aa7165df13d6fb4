import type { LevelDescriptor } from './level.js';

/** P (XOR) and Q (Reed–Solomon over GF(2^8)), left-symmetric: survives the loss of any two members. */
export const raid6: LevelDescriptor = {
  level: 6,
  kind: 'parity',
  minMembers: 4,
  parity: 2,
  copies: () => 1,
  layoutName: () => 'left-symmetric',
};
