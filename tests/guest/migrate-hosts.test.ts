import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { strata } from '../../bench/chain-cli.js';
import { strataCli, type RunningServer } from '../../bench/nbd-servers.js';
import { Qmp } from '../../bench/qmp.js';
import { createGuestDisk } from '../support/guest-disk.js';
import { expectPoolClean, expectSoakVerified, expectStrataExit } from '../support/guest-expect.js';
import { lastRound } from '../support/guest-soak.js';
import { guestSuite, guestToolsSkip } from '../support/guest-suite.js';
import { GUEST_FILES, GUEST_TOOLS, missingTools } from '../support/guest-tools.js';

const run = promisify(execFile);

/**
 * A VM moved to another host with its disk, as two homes on one machine
 * stand for two hosts: host A serves the guest's volume, host B serves an
 * empty volume of the same size. While the guest writes, `strata migrate
 * POOL/VOL nbd://B/EXPORT --online` on A copies the volume into B's export
 * and mirrors every write; once it is in step, QEMU's own migration hands
 * the VM to a second QEMU attached to B's export. A's QEMU quits, the push
 * ends with its last client, and the guest goes on and finishes on B; its
 * files verify there, and on B's pool read back from the host.
 */
const DISK_BYTES = 256 * 1024 * 1024;
/** Under a minute on an idle machine; TCG on a loaded one takes several times that. */
const TEST_TIMEOUT_MS = 300_000;

const missing = missingTools(GUEST_TOOLS, GUEST_FILES);
const skip = guestToolsSkip(missing, 'guest two-host migration test');
// Until the built CLI pushes into NBD exports, there is nothing to test yet (in CI too).
const noPush = !hasNbdPush();
if (noPush) console.warn('guest two-host migration test skipped: this build of strata has no `migrate POOL/VOL nbd://…`');

interface JobRecord {
  id: number;
  kind: string;
  state: string;
  bytesDone?: number;
  bytesTotal?: number;
  error?: string;
}

describe.skipIf(skip || noPush)('a writing guest moved to another host: its disk pushed online into the other host\'s export, then the VM', () => {
  const suite = guestSuite('guest-hosts', missing);

  it('pushes the disk while the guest writes, hands the VM over, and every file verifies on the other host', async () => {
    const guest = suite.guest();
    const diskA = createGuestDisk('strata', suite.dir, 'host-a', DISK_BYTES);
    const diskB = createGuestDisk('strata', suite.dir, 'host-b', DISK_BYTES);
    if (!diskA.volume) throw new Error('a Strata guest disk is a pool volume');
    const { home: homeA, pool, volume } = diskA.volume;
    const qmpA = path.join(suite.dir, 'a.qmp');
    const qmpB = path.join(suite.dir, 'b.qmp');
    const channel = path.join(suite.dir, 'migrate.sock');

    const servers: RunningServer[] = [await diskA.serve(), await diskB.serve()];
    const [serverA, serverB] = servers as [RunningServer, RunningServer];
    const a = guest.soak(serverA.uri, 'none', ['-qmp', `unix:${qmpA},server=on,wait=off`]);
    const b = guest.soak(serverB.uri, 'none', ['-qmp', `unix:${qmpB},server=on,wait=off`, '-incoming', `unix:${channel}`]);
    const sockets: Qmp[] = [];
    let outcome: { runB: Awaited<typeof b.done>; handedOver: number; pushedFrom: number; inStep: number; push: { online?: boolean; job?: number } };
    try {
      await a.waitFor(/STRATA-ROUND 2\n/, 150_000);
      const pushedFrom = lastRound(a.console());
      // Runs until the volume's last client (QEMU A) has gone.
      // The rate stretches the copy of the volume's 26 MiB over seconds, so the guest's rounds race it.
      const push = run(process.execPath, [strataCli(), '--home', homeA, '--json', 'migrate', `${pool}/${volume}`, serverB.uri, '--online', '--rate', '8M'], { timeout: 240_000 });
      push.catch(() => undefined);
      const job = await untilInStep(homeA, pool, 120_000);
      const inStep = lastRound(a.console());
      const [sa, sb] = [await Qmp.connect(qmpA), await Qmp.connect(qmpB)];
      sockets.push(sa, sb);
      await sa.execute('migrate-set-parameters', { 'max-bandwidth': 4 * 1024 ** 3 });
      await sa.execute('migrate', { uri: `unix:${channel}` });
      const info = await sa.migrationEnd(90_000);
      expect(info.status, info['error-desc']).toBe('completed');
      const handedOver = lastRound(a.console());
      await sa.execute('quit').catch(() => undefined);
      await a.done;
      const pushed = await push;
      const pushOutcome = JSON.parse(pushed.stdout) as { online?: boolean; job?: number };
      expect(pushOutcome.job).toBe(job.id);
      await b.waitFor(new RegExp(`STRATA-ROUND ${handedOver + 2}\n`), 60_000);
      b.send('stop');
      outcome = { runB: await b.done, handedOver, pushedFrom, inStep, push: pushOutcome };
    } finally {
      for (const s of sockets) s.close();
      a.kill();
      b.kill();
    }
    for (const s of servers) expectStrataExit(await s.stop());

    const { runB, handedOver, pushedFrom, inStep } = outcome;
    expect(outcome.push.online).toBe(true);
    // The guest wrote while the push copied, while it mirrored, and again on host B.
    expect(inStep, 'rounds written during the copy').toBeGreaterThan(pushedFrom);
    expect(handedOver).toBeGreaterThanOrEqual(inStep);
    await expectSoakVerified(guest, runB, 'guest on host B', handedOver, diskB, suite.dir);
    expectPoolClean(diskA);
  }, TEST_TIMEOUT_MS);
});

/** Whether this build pushes into NBD exports: asked of an empty home, it says so, or names the missing pool. */
function hasNbdPush(): boolean {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-push-probe-'));
  try {
    execFileSync(process.execPath, [strataCli(), '--home', home, 'migrate', 'nopool/v', 'nbd://127.0.0.1:1/x'], { encoding: 'utf8', stdio: 'pipe' });
    return true;
  } catch (err) {
    return !/not yet in this build|unknown command/.test(String((err as { stderr?: string }).stderr));
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
}

/** The push's job once its background copy is done: from then on the target is in step with every write. */
async function untilInStep(home: string, pool: string, timeoutMs: number): Promise<JobRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const jobs = JSON.parse((await strata(home, '--json', 'job', 'list', pool)).stdout) as JobRecord[];
    const job = jobs.filter((j) => j.kind === 'migrate').at(-1);
    if (job && job.state !== 'running') throw new Error(`the push ended before the hand-over: ${JSON.stringify(job)}`);
    if (job && job.bytesTotal !== undefined && job.bytesDone === job.bytesTotal) {
      // Past the copy, the push flushes the target before it calls itself ready.
      await sleep(500);
      return job;
    }
    if (Date.now() > deadline) throw new Error(`the push was not in step after ${timeoutMs} ms: ${JSON.stringify(jobs)}`);
    await sleep(100);
  }
}
