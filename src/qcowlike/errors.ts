import { BlockDeviceError, type BlockErrorCode } from '../blockdev/index.js';

/** A user-facing pool error: one line that names what is wrong. */
export class PoolError extends Error {
  constructor(readonly code: 'ENOENT' | 'EEXIST' | 'EINVAL' | 'ENOSPC' | 'EBUSY' | 'EROFS' | 'EFORMAT' | 'ECORRUPT', message: string) {
    super(message);
    this.name = 'PoolError';
  }
}

/**
 * Data or metadata that fails its checksum. It is an EIO to the layers above
 * (NBD reports it as such) and names every place a person needs.
 */
export class ChecksumError extends BlockDeviceError {
  constructor(
    device: string,
    readonly what: string,
    readonly hostOffset: number,
    readonly volume?: string,
    readonly virtualOffset?: number,
  ) {
    const place = volume === undefined ? '' : ` of volume '${volume}' at virtual offset ${virtualOffset}`;
    super('EIO' satisfies BlockErrorCode, device, 'read', `checksum mismatch in ${what}${place} (host offset ${hostOffset})`, hostOffset);
    this.name = 'ChecksumError';
  }
}

/** Why a block failed to load, in a few words ("checksum mismatch"), for messages that name the place themselves. */
export function damageReason(err: unknown): string {
  if (err instanceof ChecksumError) return err.what.slice(err.what.lastIndexOf(': ') + 2);
  return err instanceof Error ? err.message : String(err);
}
