import fs from 'node:fs';
import path from 'node:path';
import { initScript, PATTERN_PATH } from './guest-init.js';
import { buildInitramfs } from './guest-initramfs.js';
import { guestKernel } from './guest-kernel.js';
import { expectedContent, expectedSums, patternBlob, payloadFiles, ROUND_KEEP, roundFile, sha256 } from './guest-payload.js';
import { bootGuest, qemuArgs, startVm, type DriveCache, type GuestRun, type GuestVm } from './guest-qemu.js';

const SEED = 0x5157a7a;
const JUNK_BYTES = 24 * 1024 * 1024;
/** A boot takes 2 s and a phase 4–8 s under TCG (3× that on a loaded machine); past this the guest is hung. */
const BOOT_TIMEOUT_MS = 60_000;
/** A soak runs until the host stops it: the test's own limits end it first. */
const SOAK_TIMEOUT_MS = 280_000;

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
    private readonly blob: Buffer,
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
    return new LinuxGuest(kernel.vmlinuz, initrd, blob, expectedSums(files, blob));
  }

  /** mkfs.ext4, the payload files, a trimmed junk file, checksums; then power-off. */
  write(uri: string, cache: DriveCache): Promise<GuestRun> {
    return bootGuest({ vmlinuz: this.vmlinuz, initrd: this.initrd, phase: 'write', uri, cache, readonly: false, timeoutMs: BOOT_TIMEOUT_MS });
  }

  /** e2fsck -fn and every checksum, with the disk attached read-only. */
  verify(uri: string, cache: DriveCache): Promise<GuestRun> {
    return bootGuest({ vmlinuz: this.vmlinuz, initrd: this.initrd, phase: 'verify', uri, cache, readonly: true, timeoutMs: BOOT_TIMEOUT_MS });
  }

  /**
   * The write phase's file system, then round files until the console reads
   * `stop`; `extraArgs` add a QMP socket or `-incoming` (a VM started with it
   * waits for the state of one started without).
   */
  soak(uri: string, cache: DriveCache, extraArgs: string[] = []): GuestVm {
    return startVm(
      qemuArgs({ vmlinuz: this.vmlinuz, initrd: this.initrd, phase: 'soak', uri, cache, readonly: false, timeoutMs: SOAK_TIMEOUT_MS, extraArgs }),
      SOAK_TIMEOUT_MS,
    );
  }

  /**
   * The write phase's files as a host directory (`data/…` and the
   * `SHA256SUMS` the verify phase checks), for a disk made without booting:
   * `mke2fs -d DIR` of it is a disk the verify phase passes.
   */
  payloadTree(dir: string): void {
    const lines: string[] = [];
    for (const f of payloadFiles()) {
      const file = path.join(dir, 'data', f.name);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, expectedContent(f, this.blob));
      lines.push(`${this.expected.get(f.name)}  ${f.name}\n`);
    }
    fs.writeFileSync(path.join(dir, 'SHA256SUMS'), lines.join(''));
  }

  /** name → sha256 of every file a soak that wrote `rounds` rounds leaves: the payload and the newest round files. */
  expectedAfterSoak(rounds: number): Map<string, string> {
    const sums = new Map(this.expected);
    for (let r = Math.max(1, rounds - ROUND_KEEP + 1); r <= rounds; r++) {
      const f = roundFile(r);
      sums.set(f.name, sha256(expectedContent(f, this.blob)));
    }
    return sums;
  }
}
