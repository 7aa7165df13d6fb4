import { DATA_OFFSET, MemberInUseError, MemberTooSmallError } from '../src/raid/index.js';
import { formatSize } from './size.js';

/**
 * What `raid create` and `pool create --raid` say when the array cannot be
 * made: the library's refusal in the terms of their options (--force,
 * --size), or undefined for any other error.
 */
export function raidCreateMessage(err: unknown): string | undefined {
  if (err instanceof MemberInUseError) return `${err.message}; use --force to reuse it`;
  if (err instanceof MemberTooSmallError) {
    const header = formatSize(DATA_OFFSET);
    const asked = err.requested === undefined ? 'the array' : `an array of ${formatSize(err.requested)}`;
    const hint = err.requested !== undefined && err.capacity > 0 ? `; omit --size to use the ${exactSize(err.capacity)} they hold` : '';
    return `member ${err.member} is too small: it holds ${exactSize(err.memberSize)}, ${asked} needs ${exactSize(err.needed - DATA_OFFSET)} + ${header} per member (the ${header} is superblock and bitmap)${hint}`;
  }
  return undefined;
}

/** A size in the largest unit that states it exactly (1023.75M reads as 1048320K, not as a rounded 1G). */
function exactSize(bytes: number): string {
  for (let unit = 1024 ** 4; unit >= 1024; unit /= 1024) {
    if (bytes >= unit && bytes % unit === 0) return String(bytes / unit) + 'KMGT'[Math.log2(unit) / 10 - 1]!;
  }
  return `${bytes} bytes`;
}
