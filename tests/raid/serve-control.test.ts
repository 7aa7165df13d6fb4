import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_LINE } from '../../src/host/control-protocol.js';
import { Registry } from '../../src/host/registry.js';
import { Pool } from '../../src/qcowlike/index.js';
import { assembleArray } from '../../src/raid/index.js';
import { hasTool, startServe, STRATA, tool, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { expectFills } from './helpers.js';

const MiB = 1024 * 1024;
const scratch = scratchDir('raid-serve');
afterAll(() => scratch.cleanup());
const haveTools = hasTool('qemu-io');

/** The CLI as a child process; never throws, so exit codes and stderr can be asserted. */
function strata(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [STRATA, ...args], { cwd: scratch.dir, timeout: 60_000 }, (err, out, errText) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, out, err: errText });
    });
  });
}

interface Status {
  state: string;
  members: { role: number; state: string; device: string; rebuilt?: number }[];
}

async function status(home: string): Promise<Status> {
  const r = await strata('--home', home, '--json', 'raid', 'status', 'p');
  expect(r.code, r.err).toBe(0);
  return JSON.parse(r.out) as Status;
}

async function qemuIo(uri: string, ...cmds: string[]): Promise<void> {
  const out = await tool('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri]);
  expect(out).not.toMatch(/Pattern verification failed|error/i);
}

/** One request line on the control socket, and the reply line. */
function ask(socket: string, line: string): Promise<{ ok: boolean; error?: string }> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket);
    let got = '';
    c.on('data', (d: Buffer) => {
      got += d.toString();
      const nl = got.indexOf('\n');
      if (nl >= 0) {
        c.end();
        resolve(JSON.parse(got.slice(0, nl)) as { ok: boolean; error?: string });
      }
    });
    c.on('error', reject);
    c.write(`${line}\n`);
  });
}

/** Known data: 8 MiB of one byte value each, spread over the volume. */
const PATTERNS = [0xa5, 0x5a, 0x3c, 0xc3].map((p, i) => ({ p, at: i * 32 * MiB, len: 8 * MiB }));
const readAll = PATTERNS.map((b) => `read -P ${b.p} ${b.at} ${b.len}`);

describe.skipIf(!haveTools)('raid commands on a pool that strata serve is serving', () => {
  it('fails and hot-replaces a member through the control socket while qemu-io reads verify; the registry follows', async () => {
    const home = path.join(scratch.dir, 'home');
    const m = [0, 1, 2, 3].map((i) => path.join(scratch.dir, `m${i}.img`));
    const fresh = path.join(scratch.dir, 'NEW.img');
    const created = await strata('--home', home, 'pool', 'create', 'p', '--size', '256M', '--raid', '6', '--members', m.join(','));
    expect(created.code, created.err).toBe(0);
    expect((await strata('--home', home, 'volume', 'create', 'p/vm', '128M')).code).toBe(0);

    const serve: ServeProcess = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    const socket = path.join(home, 'run', 'p.sock');
    try {
      expect(fs.statSync(socket).mode & 0o777, 'control socket mode').toBe(0o600);
      await qemuIo(serve.uri, ...PATTERNS.map((b) => `write -P ${b.p} ${b.at} ${b.len}`), 'flush');

      const failed = await strata('--home', home, 'raid', 'fail', '--pool', 'p', '1');
      expect(failed.code, failed.err).toBe(0);
      expect(failed.err).toMatch(/member 1 \(.*m1\.img\) marked faulty/);
      expect(await status(home)).toMatchObject({ state: 'degraded', members: [{ state: 'active' }, { state: 'faulty', device: m[1] }, { state: 'active' }, { state: 'active' }] });
      await qemuIo(serve.uri, ...readAll);

      // 128 MiB of member data at 50 MiB/s: the rebuild takes seconds, long enough to read through it.
      let replaceDone = false;
      let replaceMs = 0;
      const replaceStarted = Date.now();
      const replacing = strata('--home', home, 'raid', 'replace', '--pool', 'p', m[1]!, 'NEW.img', '--rate', '50M', '--wait').then((r) => {
        replaceDone = true;
        replaceMs = Date.now() - replaceStarted;
        return r;
      });
      const deadline = Date.now() + 20_000;
      let during: Status;
      for (;;) {
        during = await status(home);
        if (during.state === 'rebuilding' && (during.members[1]!.rebuilt ?? 0) > 0) break;
        expect(Date.now() < deadline && !replaceDone, `the rebuild never showed in status: ${JSON.stringify(during)}`).toBe(true);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(during.members[1]).toMatchObject({ state: 'rebuilding', device: fresh });
      expect(during.members[1]!.rebuilt).toBeLessThan(1);
      await qemuIo(serve.uri, ...readAll, 'write -P 0x77 110M 4M', 'read -P 0x77 110M 4M');
      expect(replaceDone, 'qemu-io finished while the rebuild was still running').toBe(false);

      const replaced = await replacing;
      expect(replaced.code, replaced.err).toBe(0);
      expect(replaced.err).toMatch(/NEW\.img takes member role 1\n/);
      expect(replaced.err).toMatch(/rebuilding: 100%/);
      // The --rate reached the server: its limiter sleeps after every step until the bytes done fit the
      // rate, so 128 MiB of member data take at least 2.56 s (the server's default, 200M, would take 0.64 s).
      expect(replaceMs).toBeGreaterThanOrEqual((128 / 50) * 1000 - 20);
      expect(replaced.err).toMatch(/member 1 \(.*NEW\.img\) rebuilt/);
      const after = await status(home);
      expect(after.state).toBe('optimal');
      expect(after.members.map((x) => x.device)).toEqual([m[0], fresh, m[2], m[3]]);
      const registry = new Registry(home);
      expect(registry.memberPaths(registry.get('p'))).toEqual([m[0], fresh, m[2], m[3]]);
      await qemuIo(serve.uri, ...readAll, 'read -P 0x77 110M 4M');

      // Bad requests: one line, exit 1, nothing changed, and the server serves on.
      const unknown = await strata('--home', home, 'raid', 'fail', '--pool', 'p', 'nosuch.img');
      expect(unknown.code).toBe(1);
      expect(unknown.err).toBe(`strata: raid6:p: '${path.join(scratch.dir, 'nosuch.img')}' is not an active member of this array\n`);
      const norole = await strata('--home', home, 'raid', 'replace', '--pool', 'p', '7', 'x.img');
      expect(norole.code).toBe(1);
      expect(norole.err).toBe('strata: raid6:p: no member role 7 (roles are 0 to 3)\n');
      expect(fs.existsSync(path.join(scratch.dir, 'x.img')), 'a member file the refused replace created is removed').toBe(false);
      expect(await ask(socket, 'not json')).toEqual({ ok: false, error: 'request is not JSON' });
      expect(await ask(socket, JSON.stringify({ op: 'add', file: 'relative.img' }))).toEqual({ ok: false, error: "'file' must be an absolute path, got 'relative.img'" });
      expect(await ask(socket, JSON.stringify({ op: 'format' }))).toMatchObject({ ok: false, error: expect.stringMatching(/^unknown request 'format'/) });
      expect(await ask(socket, 'x'.repeat(MAX_LINE + 1000))).toMatchObject({ ok: false, error: expect.stringMatching(/line longer than/) });
      expect((await status(home)).state).toBe('optimal');
      await qemuIo(serve.uri, ...readAll);
    } finally {
      expect(await serve.stop(), serve.stderr()).toBe(0);
    }
    expect(fs.existsSync(socket), 'the control socket is removed at shutdown').toBe(false);

    // Not served any more: the CLI assembles from the registry, which now lists NEW.img.
    const cold = await strata('--home', home, '--json', 'raid', 'status', 'p');
    expect(cold.code, cold.err).toBe(0);
    expect(cold.err).toBe('');
    expect(JSON.parse(cold.out)).toMatchObject({ state: 'optimal', members: [{ device: m[0] }, { device: fresh }, { device: m[2] }, { device: m[3] }] });

    // NEW.img holds the right blocks: scrub checks P and Q against it, and with roles 0 and 2
    // gone every data block is read from or rebuilt through role 1.
    const registry = new Registry(home);
    const { array, warnings } = await assembleArray(registry.memberPaths(registry.get('p')));
    expect(warnings).toEqual([]);
    expect((await array.scrub()).mismatches).toEqual([]);
    await array.fail(0);
    await array.fail(2);
    const pool = await Pool.open(array);
    const vol = await pool.openVolume('vm', { readOnly: true });
    await expectFills(vol, [...PATTERNS, { p: 0x77, at: 110 * MiB, len: 4 * MiB }]);
    await vol.close();
    await pool.close();
  }, 60_000);

  it('a killed server leaves a stale socket: the commands then open the array themselves, and the next server replaces it', async () => {
    const home = path.join(scratch.dir, 'home2');
    const m = [0, 1, 2].map((i) => path.join(scratch.dir, `s${i}.img`));
    const spare = path.join(scratch.dir, 'spare.img');
    const socket = path.join(home, 'run', 'p.sock');
    expect((await strata('--home', home, 'pool', 'create', 'p', '--size', '32M', '--raid', '5', '--members', m.join(','))).code).toBe(0);
    expect((await strata('--home', home, 'volume', 'create', 'p/vm', '8M')).code).toBe(0);
    const killed = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    await killed.stop('SIGKILL');
    expect(fs.statSync(socket).isSocket(), 'SIGKILL leaves the socket').toBe(true);

    expect((await status(home)).state).toBe('optimal');
    const added = await strata('--home', home, 'raid', 'add', '--pool', 'p', 'spare.img');
    expect(added.code, added.err).toBe(0);
    expect(added.err).toMatch(/spare\.img added as a hot spare/);
    const registry = new Registry(home);
    expect(registry.memberPaths(registry.get('p'))).toEqual([...m, spare]);

    const serve = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    try {
      await qemuIo(serve.uri, 'write -P 0x42 0 8M', 'flush');
      // Through the server (the members are locked): the hot spare takes role 0 and is rebuilt there.
      const failed = await strata('--home', home, 'raid', 'fail', '--pool', 'p', m[0]!);
      expect(failed.code, failed.err).toBe(0);
      expect(failed.err).toMatch(/spare\.img takes member role 0/);
      expect(registry.memberPaths(registry.get('p'))).toEqual([spare, m[1], m[2]]);
      const rebuilt = await strata('--home', home, 'raid', 'rebuild', 'p');
      expect(rebuilt.code, rebuilt.err).toBe(0);
      expect(await status(home)).toMatchObject({ state: 'optimal', members: [{ device: spare }, { device: m[1] }, { device: m[2] }] });
      const scrub = await strata('--home', home, 'raid', 'scrub', 'p');
      expect(scrub.code, scrub.err).toBe(0);
      expect(scrub.out).toMatch(/scrubbed .*: 0 mismatch\(es\)/);

      // A new hot spare, added online; then member 1 fails on its own (its file cut short: reads hit
      // end of file), the spare takes over, and the registry follows without any command.
      const spare2 = path.join(scratch.dir, 'spare2.img');
      const added2 = await strata('--home', home, 'raid', 'add', '--pool', 'p', spare2);
      expect(added2.code, added2.err).toBe(0);
      expect(added2.err).toMatch(/spare2\.img added as a hot spare/);
      expect(registry.memberPaths(registry.get('p'))).toEqual([spare, m[1], m[2], spare2]);
      fs.truncateSync(m[1]!, 64 * 1024);
      await qemuIo(serve.uri, 'read -P 0x42 0 8M');
      // (The registry was rewritten before the read was answered; the server's log line may trail.)
      for (let i = 0; i < 100 && !/spare2\.img takes member role 1/.test(serve.stderr()); i++) await new Promise((r) => setTimeout(r, 20));
      expect(serve.stderr()).toMatch(/spare2\.img takes member role 1/);
      expect(registry.memberPaths(registry.get('p'))).toEqual([spare, spare2, m[2]]);
      expect((await strata('--home', home, 'raid', 'rebuild', 'p')).code).toBe(0);
      expect(await status(home)).toMatchObject({ state: 'optimal', members: [{ device: spare }, { device: spare2 }, { device: m[2] }] });
      await qemuIo(serve.uri, 'read -P 0x42 0 8M');
    } finally {
      expect(await serve.stop(), serve.stderr()).toBe(0);
    }
    expect(fs.existsSync(socket)).toBe(false);
  }, 30_000);
});
