import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** What a guest test needs on every run: the programs it starts and the host files it copies into the initramfs. */
export const GUEST_TOOLS = ['qemu-system-x86_64', 'apt-get', 'apt-cache', 'dpkg-deb', 'ldd', 'nbdcopy', 'e2fsck', 'debugfs'];
export const GUEST_FILES = ['/bin/busybox', '/sbin/mke2fs', '/sbin/e2fsck', '/etc/mke2fs.conf'];

/** The programs not on PATH and the files that do not exist. */
export function missingTools(tools: string[], files: string[] = []): string[] {
  const absent = tools.filter((t) => {
    try {
      execFileSync('sh', ['-c', `command -v "$1"`, 'sh', t], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  return [...absent, ...files.filter((f) => !fs.existsSync(f))];
}
