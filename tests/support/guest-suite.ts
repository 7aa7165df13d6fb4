import { afterAll, beforeAll, expect, it } from 'vitest';
import { killAllServers } from '../../bench/nbd-servers.js';
import { LinuxGuest } from './guest.js';
import { killAllVms } from './guest-qemu.js';
import { scratchDir } from './scratch.js';

/**
 * The frame of a guest test file: its scratch folder, the guest prepared
 * once, and a first test that fails in CI when a tool is missing (locally
 * the file skips; see `guestToolsSkip`). Call inside the describe block.
 */
export function guestSuite(prefix: string, missing: string[]): { readonly dir: string; guest: () => LinuxGuest } {
  // Made when the suite runs, not when it is collected: a skipped suite runs no afterAll to remove it.
  let scratch: { dir: string; cleanup: () => void } | undefined;
  let guest: LinuxGuest | undefined;
  beforeAll(() => {
    scratch = scratchDir(prefix);
    if (missing.length > 0) return;
    guest = LinuxGuest.prepare(scratch.dir);
  });
  afterAll(() => {
    // Left running only when a test timed out before its own clean-up.
    killAllVms();
    killAllServers();
    scratch?.cleanup();
  });
  it('has every tool it needs', () => {
    expect(missing, 'install them with scripts/test-deps.sh').toEqual([]);
  });
  return {
    get dir() {
      return scratch?.dir ?? expect.unreachable('the suite has not started');
    },
    guest: () => guest ?? expect.unreachable('the guest was not prepared (a tool is missing)'),
  };
}

/** Locally a machine without QEMU skips; in CI a missing tool is a failure (the suite's first test). */
export function guestToolsSkip(missing: string[], what: string): boolean {
  const skip = missing.length > 0 && process.env.CI !== 'true';
  if (skip) console.warn(`${what} skipped, missing: ${missing.join(', ')} (run scripts/test-deps.sh as root)`);
  return skip;
}
