import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, startServe, tool, type ServeProcess } from '../nbd/support.js';
import { cephConf, TEST_CEPH_POOL, uniqueName } from '../support/ceph.js';
import { literal } from '../support/literal.js';
import { scratchDir } from '../support/scratch.js';
import { blocklist, exportUri, holderAddress, unblock } from './rados.js';
import { buildCli, fails, ok, strata } from './strata.js';

const conf = cephConf();

/** Resolves once `probe` holds, polling; rejects with `what` if it never does. */
async function until(what: string, probe: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !probe(); i++) await new Promise((r) => setTimeout(r, 50));
  if (!probe()) throw new Error(`never happened: ${what}`);
}

/**
 * Two homes on this machine stand for two hosts sharing a pool on RADOS:
 * one owner at a time, the other refused with who holds it, and a takeover
 * that fences the old owner so nothing it still sends lands.
 */
describe.skipIf(conf === undefined)('a pool on RADOS shared by two homes', () => {
  // Made once the suite runs: a skipped one leaves no directory behind.
  let dir = '';
  let cleanup = (): void => undefined;
  let homeA = '';
  let homeB = '';
  const name = uniqueName('own');
  const MiB = 1 << 20;
  let a: ServeProcess | undefined;
  let b: ServeProcess | undefined;
  const fencedAddresses: string[] = [];

  beforeAll(() => {
    ({ dir, cleanup } = scratchDir('cli-rados-takeover'));
    homeA = path.join(dir, 'a');
    homeB = path.join(dir, 'b');
    buildCli();
    expect(hasTool('qemu-io') && hasTool('ceph')).toBe(true);
    ok(homeA, ['pool', 'create', name, '--rados', TEST_CEPH_POOL, '--ceph-conf', conf!, '--size', '512M']);
    ok(homeA, ['volume', 'create', `${name}/v`, '16M']);
  });
  afterAll(async () => {
    // A server left paused by a failed test would never see its SIGTERM.
    if (a?.child.exitCode === null) a.child.kill('SIGCONT');
    await a?.stop();
    await b?.stop();
    for (const addr of fencedAddresses) await unblock(conf!, addr).catch(() => undefined);
    for (const h of [homeB, homeA]) if (strata(h, ['pool', 'delete', name, '--force']).code === 0) break;
    cleanup();
  });

  /** The refusal a home gets while the server of home A holds the pool. */
  const heldByA = (): RegExp =>
    new RegExp(`^strata: pool '${name}' is in use: its RADOS lock is held by host=${literal(os.hostname())} machine=\\S+ home=${literal(homeA)} pid=${a!.child.pid!} .*; if that owner is dead, take the pool over with: strata pool takeover ${name}$`);

  it('lets a second home import the pool home A serves, and refuses it every command naming the holder', async () => {
    a = await startServe(['--home', homeA, name, '--listen', '127.0.0.1:0']);
    const imported = ok(homeB, ['pool', 'import', name, '--rados', TEST_CEPH_POOL, '--ceph-conf', conf!]);
    expect(imported).toMatch(new RegExp(`^imported pool '${name}' from Ceph pool '${TEST_CEPH_POOL}'; it is held elsewhere right now \\(pool '${name}' is in use: its RADOS lock is held by host=\\S+ machine=\\S+ home=${literal(homeA)} pid=${a.child.pid!} `));
    const third = path.join(dir, 'c');
    const asJson = JSON.parse(ok(third, ['--json', 'pool', 'import', name, '--rados', TEST_CEPH_POOL, '--ceph-conf', conf!])) as { name: string; backing: { kind: string }; heldBy: string };
    expect(asJson).toMatchObject({ name, backing: { kind: 'rados', cephPool: TEST_CEPH_POOL, image: name, conf: conf! } });
    expect(asJson.heldBy).toMatch(new RegExp(`home=${literal(homeA)} pid=${a.child.pid!} `));
    for (const args of [
      ['pool', 'info', name],
      ['volume', 'list', name],
      ['volume', 'create', `${name}/w`, '1M'],
      ['pool', 'check', name],
      ['serve', name, '--listen', '127.0.0.1:0'],
      ['pool', 'delete', name, '--force'],
    ]) {
      expect(fails(homeB, args), args.join(' ')).toMatch(heldByA());
    }
    expect(JSON.parse(strata(homeB, ['--json', 'pool', 'info', name]).stderr)).toEqual({ error: expect.stringMatching(/is in use: its RADOS lock is held by .*strata pool takeover/) });
    // Home A itself reaches its own server as ever.
    expect(ok(homeA, ['volume', 'list', name])).toMatch(/^v\s+16M\s/m);
  }, 90_000);

  it('fences a paused server on takeover: once it wakes its writes fail, and the new owner\'s data stands', async () => {
    await tool('qemu-io', ['-f', 'raw', exportUri(a!, 'v'), '-c', `write -P 0x58 0 ${4 * MiB}`, '-c', 'flush']);
    a!.child.kill('SIGSTOP');
    const took = ok(homeB, ['pool', 'takeover', name]);
    expect(took).toMatch(new RegExp(`^took over pool '${name}': fenced host=\\S+ machine=\\S+ home=${literal(homeA)} pid=${a!.child.pid!} .*\\(client\\.\\d+ at \\S+\\); its lock is broken and the pool opens here\\n$`));
    const fenced = holderAddress(took);
    fencedAddresses.push(fenced);
    expect(await blocklist(conf!)).toContain(fenced);

    b = await startServe(['--home', homeB, name, '--listen', '127.0.0.1:0']);
    await tool('qemu-io', ['-f', 'raw', exportUri(b, 'v'), '-c', `read -P 0x58 0 ${4 * MiB}`, '-c', `write -P 0x59 ${MiB} ${MiB}`, '-c', 'flush']);

    a!.child.kill('SIGCONT');
    await expect(tool('qemu-io', ['-f', 'raw', exportUri(a!, 'v'), '-c', `write -P 0x41 ${2 * MiB} ${MiB}`, '-c', 'flush'])).rejects.toThrow(/(write|flush) failed: Input\/output error/);
    await until('server A says it was fenced', () => a!.stderr().includes('this host was fenced: another host took the pool over'));
    // Asked through the stale server (its control socket answers for the pool it still holds open), the pool says what it is now.
    expect(JSON.parse(ok(homeA, ['--json', 'pool', 'info', name])).state).toBe('fenced');
    expect(await a!.stop()).toBe(1);
    expect(a!.stderr()).toContain(`strata serve: fenced while served, another host took it over and every write to it failed from then on: pool '${name}'\n`);
    expect(await b.stop()).toBe(0);
    a = b = undefined;

    const back = path.join(dir, 'back.raw');
    ok(homeB, ['export', `${name}/v`, back]);
    const expected = Buffer.alloc(16 * MiB);
    expected.fill(0x58, 0, 4 * MiB).fill(0x59, MiB, 2 * MiB);
    expect(fs.readFileSync(back).equals(expected)).toBe(true);
    expect(ok(homeB, ['pool', 'check', name])).toMatch(/ 0 problems, 0 leaked clusters, 0 corrupt blocks\n$/);
  }, 120_000);

  it('says so when it takes over a pool nobody holds, and refuses one a live process of its own home holds', async () => {
    expect(ok(homeB, ['pool', 'takeover', name])).toBe(`pool '${name}' was not held by anyone: nothing to fence; it opens here as it is\n`);
    expect(JSON.parse(ok(homeB, ['--json', 'pool', 'takeover', name]))).toEqual({ pool: name, fenced: [] });
    b = await startServe(['--home', homeB, name, '--listen', '127.0.0.1:0']);
    expect(fails(homeB, ['pool', 'takeover', name])).toMatch(new RegExp(`^strata: pool '${name}' is held by this home's own process ${b.child.pid!} \\(host=\\S+ machine=\\S+ home=${literal(homeB)} pid=${b.child.pid!} .*\\): stop it instead of taking the pool over$`));
    // Nothing was fenced: the server goes on taking writes.
    await tool('qemu-io', ['-f', 'raw', exportUri(b, 'v'), '-c', `write -P 0x5a ${8 * MiB} ${MiB}`, '-c', 'flush']);
    expect(await b.stop()).toBe(0);
    b = undefined;
  }, 60_000);
});
