import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { ServerExit, ServerKind } from '../../bench/nbd-servers.js';
import { createGuestDisk, type GuestDisk } from '../support/guest-disk.js';
import { expectGuestOk, expectPoolClean, expectStrataExit, withServer } from '../support/guest-expect.js';
import { consoleTail, type DriveCache } from '../support/guest-qemu.js';
import { GUEST_FILES, GUEST_TOOLS, missingTools } from '../support/guest-tools.js';
import { diskOffsetOf, readBack } from '../support/guest-readback.js';
import { guestSuite, guestToolsSkip } from '../support/guest-suite.js';

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

const serverTool: Record<ServerKind, string> = { strata: process.execPath, 'qemu-nbd': 'qemu-nbd', nbdkit: 'nbdkit' };

const missing = missingTools([...GUEST_TOOLS, 'qemu-io', 'dumpe2fs', serverTool[serverKind]], GUEST_FILES);
const skip = guestToolsSkip(missing, 'guest test');

describe.skipIf(skip)(`a Linux guest on an NBD disk served by ${serverKind}`, () => {
  const suite = guestSuite('guest', missing);
  /** The disk the cache=none run wrote and verified, for the tampering check. */
  let verifiedDisk: GuestDisk | undefined;

  for (const cache of ['none', 'writethrough'] as DriveCache[]) {
    it(`keeps every file of an ext4 file system across power-off and a read-only reboot (cache=${cache})`, async () => {
      const guest = suite.guest();
      const disk = createGuestDisk(serverKind, suite.dir, `disk-${cache}`, DISK_BYTES);

      const write = await withServer(disk, (uri) => guest.write(uri, cache));
      expectGuestOk(write.result, 'write', guest.fileCount);
      expectCleanExit(write.exit);
      expect(write.result.sums).toEqual(guest.expected);

      const verify = await withServer(disk, async (uri) => ({
        guest: await guest.verify(uri, cache),
        host: await readBack(uri, suite.dir),
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
    const guest = suite.guest();
    expect(verifiedDisk, 'needs the disk the cache=none run verified').toBeDefined();
    const disk = verifiedDisk as GuestDisk;
    await withServer(disk, async (uri) => {
      const offset = await diskOffsetOf(uri, suite.dir, '/data/sixteen-mib', 100);
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

/** Strata must exit 0 on SIGTERM; the reference servers' own habits are theirs. */
function expectCleanExit(exit: ServerExit): void {
  if (serverKind !== 'strata') return;
  expectStrataExit(exit);
}
