import fs from 'node:fs';
import { alignedMemory, SLOT_ALIGN } from './aligned-buffers.js';
import { BlockDeviceError } from './errors.js';
import { sysfsBlockDir } from './sysfs.js';

export function directUnsupported(path: string): BlockDeviceError {
  return new BlockDeviceError('ENOTSUP', path, 'open', `direct I/O is not supported by the file system holding ${path}`);
}

/**
 * The unit O_DIRECT requests on `fd` must be aligned to: the logical block of
 * the device below, as sysfs reports it — the raw device itself, or the
 * device the file's file system is on (ext4 and XFS check requests against
 * that). A file system with no block device of its own (tmpfs, overlayfs,
 * btrfs, NFS) is probed instead: 512 unless a 512-byte read at offset 0 is
 * refused and a 4096-byte one is not. Every sector is written whole, so the
 * size must be a multiple of the unit: a write of the last, partial sector
 * would grow the file.
 */
export function directAlignment(fd: number, path: string, size: number, st: fs.Stats = fs.fstatSync(fd)): number {
  const alignment = logicalBlockSize(st.isBlockDevice() ? st.rdev : st.dev) ?? probe(fd, path, size);
  if (size % alignment !== 0) {
    throw new BlockDeviceError('EINVAL', path, 'open', `direct I/O needs a size that is a multiple of ${alignment} bytes (it is ${size})`);
  }
  return alignment;
}

function logicalBlockSize(devt: number): number | undefined {
  const dir = sysfsBlockDir(devt);
  // A partition has no queue/ of its own: its disk's is one level up.
  for (const file of [`${dir}/queue/logical_block_size`, `${dir}/../queue/logical_block_size`]) {
    try {
      const n = Number(fs.readFileSync(file, 'utf8').trim());
      if (Number.isSafeInteger(n) && n >= 512 && n <= SLOT_ALIGN && (n & (n - 1)) === 0) return n;
    } catch {
      // Not there: try the next, then probe.
    }
  }
  return undefined;
}

let probeMemory: Buffer | undefined;

/**
 * Weaker than sysfs: a file system may skip the alignment check for a read of
 * a hole (ext4 does), so a sparse file can pass at 512 on a 4Kn disk.
 */
function probe(fd: number, path: string, size: number): number {
  // Aligned memory of its own: the shared slots are handed out asynchronously, and opening is synchronous.
  probeMemory ??= Buffer.from(alignedMemory(SLOT_ALIGN), 0, SLOT_ALIGN);
  for (const unit of [512, SLOT_ALIGN]) {
    // Too short to probe: the size check that follows says what is wrong, if anything.
    if (size < unit) return unit;
    try {
      fs.readSync(fd, probeMemory, 0, unit, 0);
      return unit;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
    }
  }
  throw directUnsupported(path);
}
