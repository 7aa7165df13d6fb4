import { BlockDeviceError } from '../blockdev/index.js';
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM, NBD_ESHUTDOWN } from './constants.js';

/** The NBD error value for a failed device operation. Anything untyped is an I/O error. */
export function nbdErrorOf(err: unknown): number {
  if (!(err instanceof BlockDeviceError)) return NBD_EIO;
  switch (err.code) {
    case 'ENOSPC':
      return NBD_ENOSPC;
    case 'EROFS':
      return NBD_EPERM;
    case 'EINVAL':
    case 'ERANGE':
    // The protocol reserves ENOTSUP for a refused fast zero.
    case 'ENOTSUP':
      return NBD_EINVAL;
    case 'ECLOSED':
      return NBD_ESHUTDOWN;
    case 'EIO':
    case 'EBUSY':
      return NBD_EIO;
  }
}

/** The reason as a person reads it, for error chunks and logs. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
