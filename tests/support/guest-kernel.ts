import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Debian's cloud kernel for the guest test: ext4 is built in and virtio_blk is
 * a small module, so the initramfs stays tiny. It is downloaded once with
 * `apt-get download` and unpacked with `dpkg-deb -x` (never installed) into a
 * cache outside the tracked files: .scratch/guest/ (git-ignored) or
 * $STRATA_GUEST_CACHE.
 */
export interface GuestKernel {
  release: string;
  vmlinuz: string;
  /** lib/modules/<release> of the unpacked package. */
  modulesDir: string;
}

const META_PACKAGE = 'linux-image-cloud-amd64';

export function guestCacheDir(): string {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  return process.env.STRATA_GUEST_CACHE ?? path.join(root, '.scratch', 'guest');
}

export function guestKernel(): GuestKernel {
  const cache = guestCacheDir();
  fs.mkdirSync(cache, { recursive: true });
  const cached = findUnpacked(cache);
  if (cached) return cached;

  let pkg = kernelPackage();
  const work = fs.mkdtempSync(path.join(cache, 'download-'));
  try {
    try {
      aptGet(['download', pkg], work);
    } catch (err) {
      // Stale package lists name a version the mirror no longer has: refresh them once.
      if (process.getuid?.() !== 0) throw err;
      aptGet(['update', '-qq'], undefined);
      pkg = kernelPackage();
      aptGet(['download', pkg], work);
    }
    const deb = fs.readdirSync(work).find((f) => f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${work}`);
    const unpacked = path.join(work, 'root');
    execFileSync('dpkg-deb', ['-x', path.join(work, deb), unpacked], { stdio: 'pipe' });
    try {
      fs.renameSync(unpacked, path.join(cache, pkg));
    } catch (err) {
      // Another test process unpacked the same kernel first; use theirs.
      if (!findUnpacked(cache)) throw err;
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  const kernel = findUnpacked(cache);
  if (!kernel) throw new Error(`unpacked ${pkg} into ${cache} but found no boot/vmlinuz-* in it`);
  return kernel;
}

function findUnpacked(cache: string): GuestKernel | undefined {
  for (const name of fs.readdirSync(cache).filter((n) => n.startsWith('linux-image-')).sort().reverse()) {
    const boot = path.join(cache, name, 'boot');
    const vmlinuz = fs.existsSync(boot) ? fs.readdirSync(boot).find((f) => f.startsWith('vmlinuz-')) : undefined;
    if (!vmlinuz) continue;
    const release = vmlinuz.slice('vmlinuz-'.length);
    const modulesDir = path.join(cache, name, 'lib', 'modules', release);
    if (fs.existsSync(modulesDir)) return { release, vmlinuz: path.join(boot, vmlinuz), modulesDir };
  }
  return undefined;
}

/** The versioned package the meta package points at today (its name carries the ABI). */
function kernelPackage(): string {
  const depends = () => {
    try {
      const out = execFileSync('apt-cache', ['depends', META_PACKAGE], { encoding: 'utf8', stdio: 'pipe' });
      return /Depends:\s*(linux-image-\S+)/.exec(out)?.[1];
    } catch {
      return undefined;
    }
  };
  let pkg = depends();
  if (!pkg && process.getuid?.() === 0) {
    aptGet(['update', '-qq'], undefined);
    pkg = depends();
  }
  if (!pkg) {
    throw new Error(`apt-cache knows no ${META_PACKAGE}; run 'apt-get update' as root (Debian bookworm main is needed)`);
  }
  return pkg;
}

function aptGet(args: string[], cwd: string | undefined): void {
  try {
    execFileSync('apt-get', args, { cwd, stdio: 'pipe', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? '';
    throw new Error(`apt-get ${args.join(' ')} failed: ${stderr || String(err)}`);
  }
}
