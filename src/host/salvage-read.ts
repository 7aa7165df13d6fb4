import { BlockDeviceError, type BlockDevice } from '../blockdev/index.js';

/** The grain at which a salvaging read retries a failed range: a page, the smallest unit a checksum covers. */
const GRAIN = 4096;

export interface Range {
  offset: number;
  length: number;
}

/**
 * Reads like volume.read, but with `bad` given (export --salvage, as
 * `qemu-img convert --salvage`), a range that does not verify (a checksum
 * mismatch, an I/O error below) is read again page by page: pages that verify
 * are kept, the others are zero-filled in `buf` and recorded in `bad`.
 */
export async function readVerified(volume: BlockDevice, buf: Buffer, offset: number, bad: Range[] | undefined): Promise<void> {
  try {
    await volume.read(buf, offset);
    return;
  } catch (err) {
    if (bad === undefined || !unreadable(err)) throw err;
  }
  for (let at = 0; at < buf.length; at += GRAIN) {
    const piece = buf.subarray(at, Math.min(at + GRAIN, buf.length));
    try {
      await volume.read(piece, offset + at);
    } catch (err) {
      if (!unreadable(err)) throw err;
      piece.fill(0);
      bad.push({ offset: offset + at, length: piece.length });
    }
  }
}

/** Data that cannot be read as written, as opposed to a closed pool or a bad request, which salvage does not hide. */
function unreadable(err: unknown): boolean {
  return err instanceof BlockDeviceError && err.code === 'EIO';
}

/** Sorted, adjacent ranges merged. */
export function mergeRanges(ranges: Range[]): Range[] {
  const out: Range[] = [];
  for (const r of [...ranges].sort((a, b) => a.offset - b.offset)) {
    const last = out[out.length - 1];
    if (last && last.offset + last.length === r.offset) last.length += r.length;
    else out.push({ ...r });
  }
  return out;
}
