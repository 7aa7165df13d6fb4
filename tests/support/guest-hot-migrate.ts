import { expect } from 'vitest';
import { migrateVolume, volumeNames } from '../../bench/migrate-cli.js';
import { servePool, type ServerExit } from '../../bench/nbd-servers.js';
import { createGuestDisk, poolDisk, type GuestDisk } from './guest-disk.js';
import { expectPoolClean, expectSoakVerified, expectStrataExit } from './guest-expect.js';
import type { GuestRun } from './guest-qemu.js';
import { lastRound } from './guest-soak.js';
import type { guestSuite } from './guest-suite.js';

/**
 * A guest writes rounds of files on a served pool volume while
 * `strata migrate --online` moves the volume to the pool `makeTarget`
 * creates in the same home; the guest goes on writing after the pivot, and
 * every file verifies from the target; the source no longer holds it and
 * checks clean.
 */
export async function hotMigrateGuest(suite: ReturnType<typeof guestSuite>, opts: { diskBytes: number; rate: string; label: string; makeTarget: (home: string) => string }): Promise<void> {
  const guest = suite.guest();
  const source = createGuestDisk('strata', suite.dir, 'hot', opts.diskBytes);
  if (!source.volume) throw new Error('a Strata guest disk is a pool volume');
  const { home, pool: sourcePool, volume } = source.volume;
  const targetPool = opts.makeTarget(home);
  const target: GuestDisk = poolDisk({ home, pool: targetPool, volume });

  // The server holds the source pool only; the migration opens the target pool itself.
  const server = await servePool(home, sourcePool, [volume]);
  const vm = guest.soak(server.uri, 'none');
  let migrated: { roundAtStart: number; roundAtEnd: number; output: string };
  let runGuest: GuestRun;
  let served: ServerExit;
  try {
    await vm.waitFor(/STRATA-ROUND 2\n/, 150_000);
    const roundAtStart = lastRound(vm.console());
    // A rate limit keeps the copy going for seconds, so the guest's rounds race it.
    const move = await migrateVolume(home, sourcePool, volume, targetPool, true, 120_000, ['--rate', opts.rate]);
    migrated = { roundAtStart, roundAtEnd: lastRound(vm.console()), output: move.output };
    // Rounds written after the pivot land in the target only.
    await vm.waitFor(new RegExp(`STRATA-ROUND ${migrated.roundAtEnd + 2}\n`), 60_000);
    vm.send('stop');
    runGuest = await vm.done;
  } finally {
    vm.kill();
    served = await server.stop();
  }
  expectStrataExit(served);

  const during = `rounds ${migrated.roundAtStart}–${migrated.roundAtEnd} ran during the migration; it said: ${migrated.output}`;
  expect(migrated.roundAtEnd, `the guest wrote while the copy ran: ${during}`).toBeGreaterThan(migrated.roundAtStart);
  expect(await volumeNames(home, sourcePool), 'the source pool gave the volume up').not.toContain(volume);
  expect(await volumeNames(home, targetPool)).toContain(volume);
  await expectSoakVerified(guest, runGuest, opts.label, migrated.roundAtEnd, target, suite.dir, during);
  expectPoolClean(source, false);
}
