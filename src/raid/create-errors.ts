import type { RaidLevel } from './levels/index.js';

/** A member file that already carries a Strata RAID superblock, refused unless the create is forced. */
export class MemberInUseError extends Error {
  constructor(
    readonly device: string,
    readonly level: RaidLevel,
    readonly arrayUuid: string,
    readonly arrayName: string,
  ) {
    super(`${device} is already a member of RAID ${level} array ${arrayUuid}${arrayName ? ` (${arrayName})` : ''}`);
    this.name = 'MemberInUseError';
  }
}

/**
 * A member too small for the array asked for. It carries what the members hold
 * as they are, since the usual cause is a size that forgot the superblock and
 * bitmap each member keeps ahead of its data.
 */
export class MemberTooSmallError extends Error {
  constructor(
    readonly member: string,
    readonly memberSize: number,
    /** Bytes each member needs, its header included. */
    readonly needed: number,
    /** Bytes of array the members hold as they are (0: not even one chunk row). */
    readonly capacity: number,
    /** The array size asked for, when one was. */
    readonly requested: number | undefined,
  ) {
    const asIs = capacity > 0 && requested !== undefined ? `; as they are, the members hold an array of ${capacity} bytes` : '';
    super(`member ${member} is too small: it holds ${memberSize} bytes, the array needs ${needed} per member${asIs}`);
    this.name = 'MemberTooSmallError';
  }
}
