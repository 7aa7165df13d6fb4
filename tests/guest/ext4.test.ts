import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer, ServerExit, ServerKind } from '../../bench/nbd-servers.js';
import { LinuxGuest } from '../support/guest.js';
import { createGuestDisk, type GuestDisk } from '../support/guest-disk.js';
import { consoleTail, type DriveCache, type GuestRun } from '../support/guest-qemu.js';
import { diskOffsetOf, readBack } from '../support/guest-readback.js';
import { scratchDir } from '../support/scratch.js';

/**
 * A real Linux guest on an NBD disk: it makes ext4, writes files of known
 * content, trims, powers off; a second boot with the disk read-only checks the
 * file system and every checksum; the host then reads the disk back with its
 * own tools. The disk is a thin volume of a Strata pool served by `strata
 * serve`, and the pool must pass `strata pool check` afterwards;
 * STRATA_GUEST_SERVER=qemu-nbd or nbdkit runs the same test on a raw file
 * served by a reference server.
 */
const SERVER_KINDS: ServerKind[] = ['strata', 'qemu-nbd', 'nbdkit'];
const serverKind = (process.env.STRATA_GUEST_SERVER ?? 'strata') as ServerKind;
if (!SERVER_KINDS.includes(serverKind)) {
  throw new Error(`STRATA_GUEST_SERVER must be one of ${SERVER_KINDS.join(', ')}, not '${serverKind}'`);
}
const DISK_BYTES = 256 * 1024 * 1024;

const TOOLS = ['qemu-system-x86_64', 'qemu-io', 'apt-get', 'apt-cache', 'dpkg-deb', 'ldd', 'nbdcopy', 'e2fsck', 'debugfs', 'dumpe2fs'];
const FILES = ['/bin/busybox', '/sbin/mke2fs', '/sbin/e2fsck', '/etc/mke2fs.conf'];
const serverTool: Record<ServerKind, string> = { strata: process.execPath, 'qemu-nbd': 'qemu-nbd', nbdkit: 'nbdkit' };

function missingTools(): string[] {
  const absent = [...TOOLS, serverTool[serverKind]].filter((t) => {
    try {
      execFileSync('sh', ['-c', `command -v "$1"`, 'sh', t], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  return [...absent, ...FILES.filter((f) => !fs.existsSync(f))];
}

const missing = missingTools();
// Locally a machine without QEMU skips; in CI a missing tool is a failure (see the first test).
const skip = missing.length > 0 && process.env.CI !== 'true';
if (skip) console.warn(`guest test skipped, missing: ${missing.join(', ')} (run scripts/test-deps.sh as root)`);

describe.skipIf(skip)(`a Linux guest on an NBD disk served by ${serverKind}`, () => {
  const scratch = scratchDir('guest');
  let guest: LinuxGuest;
  /** The disk the cache=none run wrote and verified, for the tampering check. */
  let verifiedDisk: GuestDisk | undefined;

  beforeAll(() => {
    if (missing.length > 0) return;
    guest = LinuxGuest.prepare(scratch.dir);
  });
  afterAll(() => scratch.cleanup());

  it('has every tool it needs', () => {
    expect(missing, 'install them with scripts/test-deps.sh').toEqual([]);
  });

  for (const cache of ['none', 'writethrough'] as DriveCache[]) {
    it(`keeps every file of an ext4 file system across power-off and a read-only reboot (cache=${cache})`, async () => {
      const disk = createGuestDisk(serverKind, scratch.dir, `disk-${cache}`, DISK_BYTES);

      const write = await withServer(disk, (uri) => guest.write(uri, cache));
      expectGuestOk(write.result, 'write', guest.fileCount);
      expectCleanExit(write.exit);
      expect(write.result.sums).toEqual(guest.expected);

      const verify = await withServer(disk, async (uri) => ({
        guest: await guest.verify(uri, cache),
        host: await readBack(uri, scratch.dir),
      }));
      expectGuestOk(verify.result.guest, 'verify', guest.fileCount);
      expectCleanExit(verify.exit);
      expect(verify.result.guest.sums).toEqual(guest.expected);
      expect(verify.result.host.fsckExit, verify.result.host.fsckOutput).toBe(0);
      expect(verify.result.host.sums).toEqual(guest.expected);
      expectPoolClean(disk);
      if (cache === 'none') verifiedDisk = disk;
      else disk.remove();
    });
  }

  it('notices one block of one file changed behind the file system\'s back', async () => {
    expect(verifiedDisk, 'needs the disk the cache=none run verified').toBeDefined();
    const disk = verifiedDisk as GuestDisk;
    await withServer(disk, async (uri) => {
      const offset = await diskOffsetOf(uri, scratch.dir, '/data/sixteen-mib', 100);
      execFileSync('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a ${offset} 4096`, uri], { stdio: 'pipe' });
    });
    const verify = await withServer(disk, (uri) => guest.verify(uri, 'none'));
    const why = consoleTail(verify.result);
    expect(verify.result.verdict, why).toBe('FAIL checksum mismatch');
    expect(verify.result.console, why).toMatch(/sixteen-mib: FAILED/);
    expect(verify.result.console, why).not.toMatch(/(?<!sixteen-mib): FAILED/);
    // The change came through the server, so the pool itself holds it consistently.
    expectPoolClean(disk);
  });
});

/** Runs one guest boot against a fresh server process, so the second boot sees only what reached storage. */
async function withServer<T>(disk: GuestDisk, body: (uri: string) => Promise<T>): Promise<{ result: T; exit: ServerExit }> {
  const server: RunningServer = await disk.serve();
  let result: T;
  try {
    result = await body(server.uri);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return { result, exit: await server.stop() };
}

function expectGuestOk(run: GuestRun, phase: string, files: number): void {
  const why = `${phase} boot: verdict ${run.verdict ?? '(none)'}, qemu exit ${run.exitCode}` +
    `${run.timedOut ? ', killed at the timeout' : ''} after ${run.elapsedMs} ms; console ends:\n${consoleTail(run)}`;
  expect(run.verdict, why).toBe(`OK ${files}`);
  expect(run.timedOut, why).toBe(false);
  expect(run.exitCode, why).toBe(0);
}

/** Strata must exit 0 on SIGTERM; the reference servers' own habits are theirs. */
function expectCleanExit(exit: ServerExit): void {
  if (serverKind !== 'strata') return;
  expect({ code: exit.code, signal: exit.signal }, exit.stderr).toEqual({ code: 0, signal: null });
}

/** Every structure and checksum of the pool verifies (a raw file has nothing to check). */
function expectPoolClean(disk: GuestDisk): void {
  const check = disk.checkPool();
  if (check === undefined) return;
  expect(check.problems, JSON.stringify(check)).toEqual([]);
  expect(check.clean).toBe(true);
  expect(check.clustersChecked, 'the guest wrote data, so the pool holds clusters').toBeGreaterThan(0);
}
