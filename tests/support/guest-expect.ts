import { expect } from 'vitest';
import type { RunningServer, ServerExit } from '../../bench/nbd-servers.js';
import type { LinuxGuest } from './guest.js';
import type { GuestDisk } from './guest-disk.js';
import { readBack } from './guest-readback.js';
import { soakRounds } from './guest-soak.js';
import { consoleTail, type GuestRun } from './guest-qemu.js';

/** The checks every guest test makes of a boot, a server's exit and a pool. */

/** Runs `body` against a fresh server process on the disk, so it sees only what reached storage. */
export async function withServer<T>(disk: GuestDisk, body: (uri: string) => Promise<T>): Promise<{ result: T; exit: ServerExit }> {
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

export function expectGuestOk(run: GuestRun, phase: string, files: number): void {
  const why = `${phase} boot: verdict ${run.verdict ?? '(none)'}, qemu exit ${run.exitCode}` +
    `${run.timedOut ? ', killed at the timeout' : ''} after ${run.elapsedMs} ms; console ends:\n${consoleTail(run)}`;
  expect(run.verdict, why).toBe(`OK ${files}`);
  expect(run.timedOut, why).toBe(false);
  expect(run.exitCode, why).toBe(0);
}

/** Strata must exit 0 on SIGTERM. */
export function expectStrataExit(exit: ServerExit): void {
  expect({ code: exit.code, signal: exit.signal }, exit.stderr).toEqual({ code: 0, signal: null });
}

/** Every structure and checksum of the pool verifies (a raw file has nothing to check); `holdsData` false for a pool the disk left. */
export function expectPoolClean(disk: GuestDisk, holdsData = true): void {
  const check = disk.checkPool();
  if (check === undefined) return;
  expect(check.problems, JSON.stringify(check)).toEqual([]);
  expect(check.clean).toBe(true);
  if (holdsData) expect(check.clustersChecked, 'the guest wrote data, so the pool holds clusters').toBeGreaterThan(0);
}

/**
 * A soak guest's end, wherever it ran: it wrote at least two rounds past
 * `lastSeen` (the round the host saw when it moved the VM or the disk),
 * ended OK with every checksum the host expects, and the host reads the
 * same files back from `disk` (a fresh server), whose pool checks clean.
 */
export async function expectSoakVerified(guest: LinuxGuest, run: GuestRun, phase: string, lastSeen: number, disk: GuestDisk, dir: string, why = ''): Promise<void> {
  const rounds = soakRounds(run);
  expect(rounds, why).toBeGreaterThanOrEqual(lastSeen + 2);
  const expected = guest.expectedAfterSoak(rounds);
  expectGuestOk(run, phase, expected.size);
  expect(run.sums).toEqual(expected);
  const host = await withServer(disk, (uri) => readBack(uri, dir));
  expectStrataExit(host.exit);
  expect(host.result.fsckExit, host.result.fsckOutput).toBe(0);
  expect(host.result.sums).toEqual(expected);
  expectPoolClean(disk);
}
