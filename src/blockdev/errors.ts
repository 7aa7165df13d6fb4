/**
 * Typed block-device errors. The code is errno-style so the NBD layer can map
 * it to an NBD error without parsing messages; the message names the device,
 * the operation and the byte range so a person can act on it.
 */
export type BlockErrorCode = 'EIO' | 'ENOSPC' | 'EROFS' | 'EINVAL' | 'ERANGE' | 'EBUSY' | 'ENOTSUP' | 'ECLOSED';

export type BlockOp = 'read' | 'write' | 'flush' | 'discard' | 'writeZeroes';

export class BlockDeviceError extends Error {
  readonly code: BlockErrorCode;
  readonly device: string;
  readonly op: BlockOp | 'open' | 'close';
  readonly offset: number | undefined;
  readonly length: number | undefined;

  constructor(code: BlockErrorCode, device: string, op: BlockOp | 'open' | 'close', detail: string, offset?: number, length?: number, cause?: unknown) {
    const where = offset === undefined ? '' : ` at offset ${offset}${length === undefined ? '' : ` length ${length}`}`;
    super(`${device}: ${op}${where}: ${detail}`, cause === undefined ? undefined : { cause });
    this.name = 'BlockDeviceError';
    this.code = code;
    this.device = device;
    this.op = op;
    this.offset = offset;
    this.length = length;
  }
}

/** Maps a Node system error (err.code such as 'ENOSPC') to a typed block error. */
export function fromSystemError(err: unknown, device: string, op: BlockOp | 'open' | 'close', offset?: number, length?: number): BlockDeviceError {
  if (err instanceof BlockDeviceError) return err;
  const sys = (err as NodeJS.ErrnoException | undefined)?.code;
  const code: BlockErrorCode =
    sys === 'ENOSPC' || sys === 'EDQUOT' ? 'ENOSPC'
    : sys === 'EROFS' || sys === 'EACCES' || sys === 'EPERM' || sys === 'EBADF' ? 'EROFS'
    : sys === 'EINVAL' ? 'EINVAL'
    : sys === 'EOPNOTSUPP' || sys === 'ENOTSUP' ? 'ENOTSUP'
    : 'EIO';
  const msg = err instanceof Error ? err.message : String(err);
  return new BlockDeviceError(code, device, op, msg, offset, length, err);
}
