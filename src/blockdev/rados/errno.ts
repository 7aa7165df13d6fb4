import os from 'node:os';

/** Negative errno values librados returns (Linux numbering, as librados is Linux's). */
export const RADOS_ERR = {
  ENOENT: -os.constants.errno.ENOENT,
  EBUSY: -os.constants.errno.EBUSY,
  EEXIST: -os.constants.errno.EEXIST,
  ERANGE: -os.constants.errno.ERANGE,
  ENOSPC: -os.constants.errno.ENOSPC,
  EDQUOT: -os.constants.errno.EDQUOT,
  EROFS: -os.constants.errno.EROFS,
  /** What a client gets once the cluster has blocklisted it (Node's constants omit it). */
  ESHUTDOWN: -108,
} as const;

const NAMES = new Map<number, string>(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

export function errnoName(errno: number): string {
  const n = Math.abs(errno);
  if (n === -RADOS_ERR.ESHUTDOWN) return 'ESHUTDOWN (this client is blocklisted)';
  return NAMES.get(n) ?? `errno ${n}`;
}
