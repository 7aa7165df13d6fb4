import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cpioNewc, type CpioEntry } from './guest-cpio.js';
import type { GuestKernel } from './guest-kernel.js';

/** Host programs the guest runs: e2fsprogs' own, because busybox's mke2fs makes ext2 only. */
const E2FS_PROGRAMS = ['/sbin/mke2fs', '/sbin/e2fsck'];
const BUSYBOX = '/bin/busybox';
/** The disk driver and its PCI transport; their dependencies come along. */
const MODULES = ['virtio_pci', 'virtio_blk'];
/** Newer Debian kernels compress their modules; busybox insmod wants them plain. */
const MODULE_FILE = /\.ko(\.xz|\.zst)?$/;

/**
 * An initramfs with busybox-static, mke2fs/e2fsck with the shared libraries
 * ldd names, the virtio block modules, /dev/console, and an /init made by
 * `init` from the module paths in load order. Everything is read from the
 * host, so the guest runs the host's tools.
 */
export function buildInitramfs(
  kernel: GuestKernel,
  init: (modules: string[]) => string,
  extra: { path: string; data: Uint8Array }[],
): Buffer {
  const files = new Map<string, { data: Uint8Array; executable: boolean }>();
  const add = (guestPath: string, data: Uint8Array, executable: boolean) => files.set(guestPath, { data, executable });
  const addHostFile = (hostPath: string, guestPath = hostPath) => {
    const stat = fs.statSync(hostPath);
    files.set(guestPath, { data: fs.readFileSync(hostPath), executable: (stat.mode & 0o111) !== 0 });
  };

  assert.match(lddOutput(BUSYBOX), /not a dynamic executable|statically linked/, `${BUSYBOX} is not static; install busybox-static`);
  addHostFile(BUSYBOX);
  for (const program of E2FS_PROGRAMS) {
    addHostFile(program);
    for (const lib of sharedLibraries(program)) addHostFile(lib);
  }
  addHostFile('/etc/mke2fs.conf');

  const modules = moduleLoadOrder(kernel.modulesDir, MODULES).map((hostPath) => {
    const guestPath = `/lib/modules/${path.basename(hostPath).replace(/\.ko\.(xz|zst)$/, '.ko')}`;
    add(guestPath, moduleBytes(hostPath), false);
    return guestPath;
  });
  for (const e of extra) files.set(e.path, { data: e.data, executable: false });
  files.set('/init', { data: Buffer.from(init(modules)), executable: true });

  const dirs = new Set<string>(['/dev', '/proc', '/sys', '/mnt', '/tmp', '/bin', '/sbin', '/etc']);
  for (const p of files.keys()) {
    for (let d = path.posix.dirname(p); d !== '/'; d = path.posix.dirname(d)) dirs.add(d);
  }
  const entries: CpioEntry[] = [
    ...[...dirs].sort().map((d): CpioEntry => ({ kind: 'dir', path: d })),
    // The kernel opens /dev/console for /init before anything can mount devtmpfs.
    { kind: 'chardev', path: '/dev/console', major: 5, minor: 1 },
    { kind: 'symlink', path: '/etc/mtab', target: '/proc/mounts' },
    ...[...files].map(([p, f]): CpioEntry => ({ kind: 'file', path: p, data: f.data, executable: f.executable })),
  ];
  return cpioNewc(entries);
}

function lddOutput(program: string): string {
  try {
    return execFileSync('ldd', [program], { encoding: 'utf8', stdio: 'pipe' });
  } catch (err) {
    // ldd exits 1 for a static program and says so on stdout or stderr.
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}`;
  }
}

/** Every library and the dynamic loader ldd lists, at the paths the program looks for them. */
function sharedLibraries(program: string): string[] {
  const libs: string[] = [];
  for (const line of lddOutput(program).split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
  }
  assert.notEqual(libs.length, 0, `ldd ${program} listed no libraries: is ${program} installed?`);
  return libs;
}

/**
 * Module files in load order, dependencies first. Debian's package has no
 * modules.dep (depmod writes it at install time), so each module's
 * `depends=` entry is read from its .modinfo strings.
 */
export function moduleLoadOrder(modulesDir: string, wanted: string[]): string[] {
  const byName = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (MODULE_FILE.test(e.name)) byName.set(e.name.replace(MODULE_FILE, '').replace(/-/g, '_'), p);
    }
  };
  walk(path.join(modulesDir, 'kernel'));
  const builtin = fs.readFileSync(path.join(modulesDir, 'modules.builtin'), 'utf8');
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const file = byName.get(name);
    if (!file) {
      const isBuiltin = builtin.split('\n').some((l) => path.basename(l).replace(MODULE_FILE, '').replace(/-/g, '_') === name);
      assert.ok(isBuiltin, `kernel module ${name} is neither in ${modulesDir}/kernel nor built in`);
      return;
    }
    for (const dep of moduleDepends(file)) visit(dep);
    order.push(file);
  };
  for (const name of wanted) visit(name);
  return order;
}

function moduleBytes(file: string): Buffer {
  if (file.endsWith('.ko.xz')) return execFileSync('xz', ['-dc', file], { maxBuffer: 64 * 1024 * 1024 });
  if (file.endsWith('.ko.zst')) return execFileSync('zstd', ['-dc', file], { maxBuffer: 64 * 1024 * 1024 });
  return fs.readFileSync(file);
}

function moduleDepends(file: string): string[] {
  const bytes = moduleBytes(file);
  const key = Buffer.from('\0depends=');
  const at = bytes.indexOf(key);
  if (at < 0) return [];
  const start = at + key.length;
  const value = bytes.subarray(start, bytes.indexOf(0, start)).toString('latin1');
  return value ? value.split(',') : [];
}
