import fs from 'node:fs';
import path from 'node:path';

/**
 * Replaces a small JSON file of the home whole, so that a crash leaves the
 * old contents or the new ones: a temp file beside it, fsync, rename, fsync
 * of the directory. Private to the user (0600, in a 0700 directory).
 */
export function writeJsonDurably(file: string, value: unknown): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, `${JSON.stringify(value, null, 2)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}
