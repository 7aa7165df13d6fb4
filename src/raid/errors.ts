/**
 * A user-facing RAID error: one line that names what is wrong, with a code a
 * caller can branch on without parsing it. Errors of member or array I/O are
 * BlockDeviceErrors, as for any device.
 */
export type RaidErrorCode =
  /** A parameter that no array accepts (level, chunk, copies, size, name). */
  | 'EINVAL'
  /** No such member, role or array among what was given. */
  | 'ENOENT'
  /** The device is already a member (of this or another array), or given twice. */
  | 'EEXIST'
  /** The member or array is not in a state that allows it (already faulty, still active, would lose data). */
  | 'ESTATE'
  /** A device too small for what it should hold. */
  | 'ENOSPC'
  /** Too many members missing or stale to assemble the array. */
  | 'EDEGRADED'
  /** A superblock or stored record this build cannot read. */
  | 'EFORMAT';

export class RaidError extends Error {
  constructor(
    readonly code: RaidErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'RaidError';
  }
}
