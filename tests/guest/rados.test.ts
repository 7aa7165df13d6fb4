import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createPoolVolume, strataCli, type PoolVolume } from '../../bench/nbd-servers.js';
import { cephConf, radosPoolArgs, uniqueName } from '../support/ceph.js';
import { poolDisk } from '../support/guest-disk.js';
import { expectGuestOk, expectPoolClean, expectStrataExit, withServer } from '../support/guest-expect.js';
import { readBack } from '../support/guest-readback.js';
import { hotMigrateGuest } from '../support/guest-hot-migrate.js';
import { guestSuite, guestToolsSkip } from '../support/guest-suite.js';
import { GUEST_FILES, GUEST_TOOLS, missingTools } from '../support/guest-tools.js';

/**
 * A real Linux guest on a volume of a pool whose device is in Ceph: it
 * makes ext4 and writes its files, a read-only reboot checks them, and
 * the host reads them back; then a guest writing on a volume of a file
 * pool has its disk hot-migrated into a RADOS pool and goes on writing
 * there. Both RADOS pools check clean afterwards.
 */
const DISK_BYTES = 256 * 1024 * 1024;
/** Under a minute on an idle machine; TCG on a loaded one takes several times that. */
const TEST_TIMEOUT_MS = 300_000;
const RATE = '8M';

const conf = cephConf();
const missing = missingTools([...GUEST_TOOLS, 'qemu-io', 'dumpe2fs'], GUEST_FILES);
const skip = guestToolsSkip(missing, 'guest test on RADOS');

function cli(home: string, ...args: string[]): string {
  return execFileSync(process.execPath, [strataCli(), '--home', home, ...args], { encoding: 'utf8', stdio: 'pipe' });
}

describe.skipIf(skip || conf === undefined)('a Linux guest on a volume of a RADOS pool', () => {
  const suite = guestSuite('guest-rados', missing);
  /** RADOS pools made, by home: their objects are in the shared Ceph pool and go with `pool delete`. */
  const made: Array<{ home: string; pool: string }> = [];
  const radosPool = (home: string): string => {
    const pool = uniqueName('guest');
    made.push({ home, pool });
    return pool;
  };
  afterAll(() => {
    for (const m of made) {
      try {
        cli(m.home, 'pool', 'delete', m.pool, '--force');
      } catch {
        // Never made (the test failed before), or made and deleted already.
      }
    }
  });

  it('keeps every file of an ext4 file system across power-off and a read-only reboot', async () => {
    const guest = suite.guest();
    const home = path.join(suite.dir, 'ext4-home');
    const volume: PoolVolume = { home, pool: radosPool(home), volume: 'guest' };
    createPoolVolume(volume, DISK_BYTES, 2 * DISK_BYTES, radosPoolArgs(conf!));
    const disk = poolDisk(volume);

    const write = await withServer(disk, (uri) => guest.write(uri, 'none'));
    expectGuestOk(write.result, 'write', guest.fileCount);
    expectStrataExit(write.exit);
    expect(write.result.sums).toEqual(guest.expected);

    const verify = await withServer(disk, async (uri) => ({ guest: await guest.verify(uri, 'none'), host: await readBack(uri, suite.dir) }));
    expectGuestOk(verify.result.guest, 'verify', guest.fileCount);
    expectStrataExit(verify.exit);
    expect(verify.result.guest.sums).toEqual(guest.expected);
    expect(verify.result.host.fsckExit, verify.result.host.fsckOutput).toBe(0);
    expect(verify.result.host.sums).toEqual(guest.expected);
    expectPoolClean(disk);
  }, TEST_TIMEOUT_MS);

  it('keeps writing while `strata migrate --online` moves its disk from a file pool into a RADOS pool, and every file is there afterwards', async () => {
    await hotMigrateGuest(suite, {
      diskBytes: DISK_BYTES,
      rate: RATE,
      label: 'guest hot-migrated into RADOS',
      makeTarget: (home) => {
        const targetPool = radosPool(home);
        cli(home, 'pool', 'create', targetPool, ...radosPoolArgs(conf!), '--size', String(2 * DISK_BYTES));
        return targetPool;
      },
    });
  }, TEST_TIMEOUT_MS);
});
