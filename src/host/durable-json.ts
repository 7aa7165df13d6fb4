import fs from 'node:fs';
import path from 'node:path';

/**
 * Replaces `file` with `value` as JSON so that a crash leaves the old
 * contents or the new, never a mix: a temporary file written and synced,
 * renamed over, and the directory synced so the rename itself lasts.
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
  syncDirectory(dir);
}

/** Removes `file` so that the removal lasts a crash (nothing to do when it is not there). */
export function removeDurably(file: string): void {
  if (!fs.existsSync(file)) return;
  fs.rmSync(file, { force: true });
  syncDirectory(path.dirname(file));
}

/** Makes the entries of `dir` (a rename, a removal) last a crash. */
export function syncDirectory(dir: string): void {
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}
