/** Every level an array can have, as numbers; the one source for the type, for parsing and for option choices. */
export const RAID_LEVELS = [0, 1, 5, 6, 10] as const;
export type RaidLevel = (typeof RAID_LEVELS)[number];

/** A level as a person or a stored record gives it ('5', 5); undefined when it is not one. */
export function parseRaidLevel(value: string | number): RaidLevel | undefined {
  const n = typeof value === 'number' ? value : /^\d+$/.test(value) ? Number(value) : NaN;
  return RAID_LEVELS.find((l) => l === n);
}

/**
 * What a RAID level is, as data: the array core reads this to decide whether
 * the array is whole, degraded or failed, and which engine carries its I/O.
 * No level re-implements "is the array still usable".
 */
export interface LevelDescriptor {
  readonly level: RaidLevel;
  /** 'mirror': every chunk has `copies` replicas (0, 1, 10). 'parity': stripes with P (5) or P+Q (6). */
  readonly kind: 'mirror' | 'parity';
  readonly minMembers: number;
  /** Parity chunks per stripe (parity levels). */
  readonly parity: 0 | 1 | 2;
  /** Replicas of each chunk for `members` members and the configured copies (mirror levels). */
  copies(members: number, configured: number): number;
  /** Layout name written in the superblock and shown in status. */
  layoutName(members: number, copies: number): string;
}
