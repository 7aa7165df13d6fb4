import fs from 'node:fs';
import path from 'node:path';
import { initScript, PATTERN_PATH } from './guest-init.js';
import { buildInitramfs } from './guest-initramfs.js';
import { guestKernel } from './guest-kernel.js';
import { expectedSums, patternBlob, payloadFiles } from './guest-payload.js';
import { bootGuest, type DriveCache, type GuestRun } from './guest-qemu.js';

const SEED = 0x5157a7a;
const JUNK_BYTES = 24 * 1024 * 1024;
/** A boot takes 2 s and a phase 4–8 s under TCG (3× that on a loaded machine); past this the guest is hung. */
const BOOT_TIMEOUT_MS = 60_000;

/**
 * A Linux guest that writes a known ext4 file system onto an NBD disk and
 * later verifies it, on any export: the disk it wrote, a snapshot of it, a
 * clone. The kernel and initramfs are prepared once per instance.
 */
export class LinuxGuest {
  /** name → sha256 of every file the write phase creates. */
  readonly expected: Map<string, string>;
  readonly fileCount: number;

  private constructor(
    private readonly vmlinuz: string,
    private readonly initrd: string,
    expected: Map<string, string>,
  ) {
    this.expected = expected;
    this.fileCount = expected.size;
  }

  /** Fetches the kernel if it is not cached yet and writes the initramfs into `workDir`. */
  static prepare(workDir: string): LinuxGuest {
    const kernel = guestKernel();
    const files = payloadFiles();
    const blob = patternBlob(SEED);
    const initrd = path.join(workDir, 'initrd.cpio');
    const init = (modules: string[]) => initScript({ modules, files, junkBytes: JUNK_BYTES });
    fs.writeFileSync(initrd, buildInitramfs(kernel, init, [{ path: PATTERN_PATH, data: blob }]));
    return new LinuxGuest(kernel.vmlinuz, initrd, expectedSums(files, blob));
  }

  /** mkfs.ext4, the payload files, a trimmed junk file, checksums; then power-off. */
  write(uri: string, cache: DriveCache): Promise<GuestRun> {
    return bootGuest({ vmlinuz: this.vmlinuz, initrd: this.initrd, phase: 'write', uri, cache, readonly: false, timeoutMs: BOOT_TIMEOUT_MS });
  }

  /** e2fsck -fn and every checksum, with the disk attached read-only. */
  verify(uri: string, cache: DriveCache): Promise<GuestRun> {
    return bootGuest({ vmlinuz: this.vmlinuz, initrd: this.initrd, phase: 'verify', uri, cache, readonly: true, timeoutMs: BOOT_TIMEOUT_MS });
  }
}
