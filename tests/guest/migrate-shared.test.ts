import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createGuestDisk } from '../support/guest-disk.js';
import { expectSoakVerified, expectStrataExit, withServer } from '../support/guest-expect.js';
import { lastRound } from '../support/guest-soak.js';
import { GUEST_FILES, GUEST_TOOLS, missingTools } from '../support/guest-tools.js';
import { Qmp } from '../../bench/qmp.js';
import { guestSuite, guestToolsSkip } from '../support/guest-suite.js';

/**
 * QEMU's own live migration with a Strata export as the shared storage: a
 * guest writes files under one qemu-system-x86_64, a second one started
 * with `-incoming` is attached to the same export, QMP `migrate` hands the
 * VM over while it writes (the source flushes and lets go of its disk at
 * the hand-over), and the guest goes on in the second QEMU. Its files verify
 * in the guest from a fresh mount, and on the host from the export.
 */
const DISK_BYTES = 256 * 1024 * 1024;
/** Under a minute on an idle machine; TCG on a loaded one takes several times that. */
const TEST_TIMEOUT_MS = 300_000;

const missing = missingTools(GUEST_TOOLS, GUEST_FILES);
const skip = guestToolsSkip(missing, 'guest migration test');

describe.skipIf(skip)('QEMU live migration of a guest on a Strata export (shared storage)', () => {
  const suite = guestSuite('guest-mig', missing);

  it('hands a writing guest to a second QEMU on the same export, and every file verifies afterwards', async () => {
    const guest = suite.guest();
    const disk = createGuestDisk('strata', suite.dir, 'shared', DISK_BYTES);
    const qmpA = path.join(suite.dir, 'a.qmp');
    const qmpB = path.join(suite.dir, 'b.qmp');
    const channel = path.join(suite.dir, 'migrate.sock');
    const served = await withServer(disk, async (uri) => {
      const a = guest.soak(uri, 'none', ['-qmp', `unix:${qmpA},server=on,wait=off`]);
      const b = guest.soak(uri, 'none', ['-qmp', `unix:${qmpB},server=on,wait=off`, '-incoming', `unix:${channel}`]);
      const sockets: Qmp[] = [];
      try {
        await a.waitFor(/STRATA-ROUND 2\n/, 150_000);
        const [sa, sb] = [await Qmp.connect(qmpA), await Qmp.connect(qmpB)];
        sockets.push(sa, sb);
        expect((await sb.execute<{ status: string }>('query-status')).status).toBe('inmigrate');
        // The default 128 MiB/s cap only makes the copy of the guest's RAM take longer.
        await sa.execute('migrate-set-parameters', { 'max-bandwidth': 4 * 1024 ** 3 });
        await sa.execute('migrate', { uri: `unix:${channel}` });
        const info = await sa.migrationEnd(90_000);
        expect(info.status, info['error-desc']).toBe('completed');
        const handedOver = lastRound(a.console());
        expect((await sa.execute<{ status: string }>('query-status')).status).toBe('postmigrate');
        expect((await sb.execute<{ status: string }>('query-status')).status).toBe('running');
        // Two whole rounds written and synced by the second QEMU alone.
        await b.waitFor(new RegExp(`STRATA-ROUND ${handedOver + 2}\n`), 60_000);
        await sa.execute('quit').catch(() => undefined);
        const runA = await a.done;
        b.send('stop');
        const runB = await b.done;
        return { runA, runB, handedOver, migration: info };
      } finally {
        for (const s of sockets) s.close();
        a.kill();
        b.kill();
      }
    });
    expectStrataExit(served.exit);
    const { runA, runB, handedOver } = served.result;
    expect(runA.exitCode, 'the source QEMU quits cleanly after the hand-over').toBe(0);
    expect(runA.verdict, 'the source QEMU never ran the guest to its end').toBeUndefined();
    await expectSoakVerified(guest, runB, 'migrated guest', handedOver, disk, suite.dir);
  }, TEST_TIMEOUT_MS);
});
