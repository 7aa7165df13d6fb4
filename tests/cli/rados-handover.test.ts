import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, startServe, tool, type ServeProcess } from '../nbd/support.js';
import { cephConf, TEST_CEPH_POOL, uniqueName } from '../support/ceph.js';
import { literal } from '../support/literal.js';
import { scratchDir } from '../support/scratch.js';
import { sparseImage } from './image.js';
import { exportUri, holderAddress, unblock } from './rados.js';
import { buildCli, ok, strata } from './strata.js';

const conf = cephConf();
const MiB = 1 << 20;

/** `strata serve` of one pool on a free port. */
function serve(home: string, pool: string): Promise<ServeProcess> {
  return startServe(['--home', home, pool, '--listen', '127.0.0.1:0']);
}

async function identical(a: string, b: string): Promise<void> {
  expect(await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b])).toMatch(/^Images are identical/);
}

/** A server killed outright, as a crash or the OOM killer would: it releases nothing. */
async function crash(srv: ServeProcess): Promise<void> {
  await srv.stop('SIGKILL');
}

describe.skipIf(conf === undefined)('a pool on RADOS changing hands', () => {
  // Made once the suite runs: a skipped one leaves no directory behind.
  let dir = '';
  let cleanup = (): void => undefined;
  let homeA = '';
  let homeB = '';
  const name = uniqueName('hand');
  const servers: ServeProcess[] = [];
  const fenced: string[] = [];
  const started = async (home: string): Promise<ServeProcess> => {
    const s = await serve(home, name);
    servers.push(s);
    return s;
  };

  beforeAll(() => {
    ({ dir, cleanup } = scratchDir('cli-rados-handover'));
    homeA = path.join(dir, 'a');
    homeB = path.join(dir, 'b');
    buildCli();
    expect(hasTool('qemu-img') && hasTool('qemu-io')).toBe(true);
    ok(homeA, ['pool', 'create', name, '--rados', TEST_CEPH_POOL, '--ceph-conf', conf!, '--size', '512M']);
    ok(homeA, ['volume', 'create', `${name}/v`, '32M']);
    ok(homeA, ['volume', 'create', `${name}/c`, '16M']);
  });
  afterAll(async () => {
    for (const s of servers) await s.stop();
    for (const addr of fenced) await unblock(conf!, addr).catch(() => undefined);
    for (const h of [homeA, homeB]) if (strata(h, ['pool', 'delete', name, '--force']).code === 0) break;
    cleanup();
  });

  it('hands the pool from a server that stopped to another home and back, every byte with it', async () => {
    const src = path.join(dir, 'src.raw');
    sparseImage(src, 32 * MiB, 7, MiB);
    const a = await started(homeA);
    await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, exportUri(a, 'v')]);
    expect(await a.stop()).toBe(0);
    expect(a.stderr()).toBe('');

    // A stopped cleanly and let go of the lock: B opens the pool as it is, fencing nobody.
    expect(ok(homeB, ['pool', 'import', name, '--rados', TEST_CEPH_POOL, '--ceph-conf', conf!])).toBe(`imported pool '${name}': 512M on RADOS in Ceph pool '${TEST_CEPH_POOL}', 2 volumes, optimal\n`);
    const b = await started(homeB);
    await identical(src, exportUri(b, 'v'));
    await tool('qemu-io', ['-f', 'raw', exportUri(b, 'v'), '-c', `write -P 0x77 ${4 * MiB} ${MiB}`, '-c', `write -P 0x78 ${31 * MiB} ${MiB}`, '-c', 'flush']);
    expect(await b.stop()).toBe(0);
    expect(b.stderr()).toBe('');

    const expected = fs.readFileSync(src);
    expected.fill(0x77, 4 * MiB, 5 * MiB).fill(0x78, 31 * MiB, 32 * MiB);
    const want = path.join(dir, 'expected.raw');
    fs.writeFileSync(want, expected);
    const again = await started(homeA);
    await identical(want, exportUri(again, 'v'));
    expect(await again.stop()).toBe(0);
    expect(again.stderr()).toBe('');
  }, 120_000);

  it('reopens in the same home after its server was killed, fencing the dead one itself, with every flushed byte', async () => {
    const expected = Buffer.alloc(16 * MiB);
    const first = await started(homeA);
    await tool('qemu-io', ['-f', 'raw', exportUri(first, 'c'), '-c', `write -P 0x61 0 ${MiB}`, '-c', 'flush', '-c', `write -P 0x62 ${3 * MiB} ${2 * MiB}`, '-c', 'flush']);
    expected.fill(0x61, 0, MiB).fill(0x62, 3 * MiB, 5 * MiB);
    await crash(first);

    // The next command opens the pool without a takeover and says whom it fenced.
    const info = strata(homeA, ['pool', 'info', name]);
    expect(info.code).toBe(0);
    expect(info.stdout).toMatch(/^volumes:\s+2$/m);
    expect(info.stderr).toMatch(new RegExp(`^strata: pool '${name}': its last owner on this host is gone \\(host=${literal(os.hostname())} machine=\\S+ home=${literal(homeA)} pid=${first.child.pid!} .*\\): fenced it and took the lock\\n$`));
    fenced.push(holderAddress(info.stderr));
    // That was once: the pool was closed cleanly since.
    expect(ok(homeA, ['pool', 'info', name])).toMatch(/^state:\s+optimal$/m);
    const back = path.join(dir, 'c.raw');
    ok(homeA, ['export', `${name}/c`, back]);
    expect(fs.readFileSync(back).equals(expected)).toBe(true);

    // Killed again, now with `strata serve` the next to open it.
    const second = await started(homeA);
    await tool('qemu-io', ['-f', 'raw', exportUri(second, 'c'), '-c', `write -P 0x63 ${8 * MiB} ${MiB}`, '-c', 'flush']);
    expected.fill(0x63, 8 * MiB, 9 * MiB);
    await crash(second);
    const third = await started(homeA);
    expect(third.stderr()).toMatch(new RegExp(`^strata: pool '${name}': its last owner on this host is gone \\(host=\\S+ machine=\\S+ home=${literal(homeA)} pid=${second.child.pid!} .*\\): fenced it and took the lock\\n$`));
    fenced.push(holderAddress(third.stderr()));
    fs.writeFileSync(back, expected);
    await identical(back, exportUri(third, 'c'));
    expect(await third.stop()).toBe(0);
    expect(ok(homeA, ['pool', 'check', name])).toMatch(/ 0 problems, 0 leaked clusters, 0 corrupt blocks\n$/);
  }, 120_000);
});
