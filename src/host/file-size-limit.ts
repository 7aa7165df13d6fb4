import fs from 'node:fs';
import path from 'node:path';
import { MAX_SIZE, formatSize } from './size.js';

/**
 * When a file system refuses a file that large (EFBIG: ext4 with 4K blocks
 * stops at 16T), the useful answer is its limit. No portable call reports it,
 * so it is measured: a scratch file in the same directory is grown (sparse,
 * nothing written) by bisection, about fifty ftruncate calls.
 */
export function largestFileSize(dir: string): number | undefined {
  const probe = path.join(dir, `.strata-size-probe-${process.pid}`);
  let fd: number;
  try {
    fd = fs.openSync(probe, 'wx', 0o600);
  } catch {
    return undefined;
  }
  try {
    let fits = 0;
    let refused = MAX_SIZE + 1;
    while (refused - fits > 1) {
      const mid = fits + Math.floor((refused - fits) / 2);
      try {
        fs.ftruncateSync(fd, mid);
        fits = mid;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EFBIG' && (err as NodeJS.ErrnoException).code !== 'EINVAL') return undefined;
        refused = mid;
      }
    }
    return fits;
  } finally {
    fs.closeSync(fd);
    fs.rmSync(probe, { force: true });
  }
}

/** Whether `err` (or what caused it) is the file system's EFBIG. */
export function isFileTooLarge(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if ((e as NodeJS.ErrnoException).code === 'EFBIG') return true;
  }
  return false;
}

/** "FILE: its file system takes files of at most 16T (… bytes), not 1P", from an EFBIG on FILE. */
export function tooLargeMessage(file: string, wanted?: number): string {
  const max = largestFileSize(path.dirname(file));
  const own = processFileSizeLimit();
  // The probe meets the process's own limit (ulimit -f) as well: say which one it was.
  const who = own !== undefined && max !== undefined && own <= max ? 'this process may make files (ulimit -f) of' : 'its file system takes files of';
  const limit = max === undefined ? 'its file system refuses a file that large' : `${who} at most ${formatSize(max)} (${max} bytes)`;
  return `${file}: ${limit}${wanted === undefined ? '' : `, not ${formatSize(wanted)}`}`;
}

/** RLIMIT_FSIZE in bytes from /proc/self/limits (Node has no getrlimit), or undefined when unlimited or unknown. */
function processFileSizeLimit(): number | undefined {
  try {
    const m = /^Max file size\s+(\d+)\s/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}
