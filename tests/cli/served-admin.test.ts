import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlSocketPath, MAX_LINE } from '../../src/host/control-protocol.js';
import { NbdClient } from '../../src/nbd/index.js';
import { hasTool, parseFio, startServe, tool, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { buildCli, fails, ok, strata } from './strata.js';

/** Output of a command with what changes from one run to the next taken out: times, and how long an online check held writes (only a served check says). */
function stable(text: string): string {
  return text.replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, 'TIME').replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'TIME').replace(/,\n\s*"heldWritesMs": \d+/g, '');
}

/** One request line on the control socket and its reply line, raw. */
function rawControl(home: string, pool: string, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(controlSocketPath(home, pool));
    let got = '';
    c.on('data', (d) => {
      got += d.toString();
      if (got.includes('\n')) {
        c.end();
        resolve(got.split('\n')[0]!);
      }
    });
    c.on('error', reject);
    c.on('close', () => resolve(got));
    c.write(line);
  });
}

describe('every pool and volume command works on a served pool', () => {
  const { dir, cleanup } = scratchDir('served-admin');
  const home = path.join(dir, 'h');
  let srv: ServeProcess | undefined;
  const port = (): string => new URL(srv!.uri).port;
  const uri = (name: string): string => `nbd://127.0.0.1:${port()}/${name}`;

  beforeAll(() => {
    buildCli();
    ok(home, ['pool', 'create', 'p', '--size', '2G']);
    ok(home, ['volume', 'create', 'p/base', '256M']);
    fs.writeFileSync(path.join(dir, 'img.raw'), Buffer.alloc(3 << 20, 0x5a));
    ok(home, ['import', 'p/base', path.join(dir, 'img.raw')]);
  });
  afterAll(async () => {
    await srv?.stop();
    cleanup();
  });

  it('prints the same, human and --json, served or not', async () => {
    const verbs = [
      ['pool', 'info', 'p'],
      ['volume', 'list', 'p'],
      ['volume', 'info', 'p/base'],
      ['map', 'p/base'],
      ['pool', 'check', 'p'],
    ];
    const runAll = (): string[] => verbs.flatMap((v) => [stable(ok(home, v)), stable(ok(home, ['--json', ...v]))]);
    const offline = runAll();
    srv = await startServe(['--home', home, 'p', '--listen', '127.0.0.1:0']);
    const online = runAll();
    // The pool file's host allocation may move between the two runs (the server's journal); nothing else may.
    const noHost = (s: string): string => s.replace(/on host: .*|"hostAllocatedBytes": \d+/g, 'HOST');
    expect(online.map(noHost)).toEqual(offline.map(noHost));
  }, 120_000);

  it('creates, resizes and deletes volumes while served; a new volume is exported at once', async () => {
    expect(hasTool('qemu-io') && hasTool('nbdcopy') && hasTool('nbdinfo')).toBe(true);
    expect(ok(home, ['volume', 'create', 'p/fresh', '64M'])).toBe('created volume p/fresh: 64M\n');
    const list = JSON.parse(await tool('nbdinfo', ['--list', '--json', uri('')])) as { exports: Array<{ 'export-name': string }> };
    expect(list.exports.map((e) => e['export-name']).sort()).toEqual(['base', 'fresh']);
    await tool('qemu-io', ['-f', 'raw', uri('fresh'), '-c', 'write -P 0x77 1M 2M', '-c', 'flush']);
    const out = path.join(dir, 'fresh.raw');
    await tool('nbdcopy', [uri('fresh'), out]);
    const got = fs.readFileSync(out);
    expect(got.subarray(1 << 20, 3 << 20).every((b) => b === 0x77)).toBe(true);
    expect(got.subarray(0, 1 << 20).every((b) => b === 0)).toBe(true);
    // Reachable as POOL/VOL too.
    expect((await tool('nbdinfo', ['--size', uri('p/fresh')])).trim()).toBe(String(64 << 20));
    // A resize shows to new connections.
    expect(ok(home, ['volume', 'resize', 'p/fresh', '+64M'])).toBe('resized p/fresh: 64M -> 128M\n');
    expect((await tool('nbdinfo', ['--size', uri('fresh')])).trim()).toBe(String(128 << 20));
    expect(fails(home, ['volume', 'resize', 'p/fresh', '1M'])).toBe('strata: cannot shrink p/fresh from 128M to 1M: 2M of data lies beyond 1M (a forced shrink discards it)');
    expect(ok(home, ['volume', 'delete', 'p/fresh'])).toBe('deleted volume p/fresh\n');
    const after = JSON.parse(await tool('nbdinfo', ['--list', '--json', uri('')])) as { exports: Array<{ 'export-name': string }> };
    expect(after.exports.map((e) => e['export-name'])).toEqual(['base']);
    expect(fails(home, ['volume', 'info', 'p/fresh'])).toBe("strata: volume 'fresh' not found in pool 'p'");
  }, 120_000);

  it('refuses to delete a volume with connected clients, and check --repair online, and says why', async () => {
    ok(home, ['volume', 'create', 'p/busy', '16M']);
    // A client past the handshake on 'busy' holds it open.
    const client = await NbdClient.connect({ port: Number(port()), export: 'busy' });
    const other = await NbdClient.connect({ port: Number(port()), export: 'base' });
    expect(fails(home, ['volume', 'delete', 'p/busy'])).toBe("strata: volume 'p/busy' has 1 connected client; disconnect it first, or force the delete to end its connection");
    // --force ends that connection (its client gets an error), deletes, and the other export goes on.
    expect(ok(home, ['volume', 'delete', 'p/busy', '--force'])).toBe('deleted volume p/busy\n');
    await expect(client.read(0, 4096)).rejects.toThrow();
    expect((await other.read(0, 4096)).every((b) => b === 0x5a)).toBe(true);
    await other.disconnect();
    expect(fails(home, ['volume', 'info', 'p/busy'])).toMatch(/not found/);
    expect(fails(home, ['pool', 'check', 'p', '--repair'])).toMatch(/is served: a repairing check needs the pool stopped/);
  }, 60_000);

  it('keeps fio verifying with no error while other volumes are created, resized, checked, listed and deleted', async () => {
    expect(hasTool('fio')).toBe(true);
    const fio = tool('fio', ['--name=verify', '--ioengine=nbd', `--uri=${uri('base')}`, '--rw=randwrite', '--bs=4k', '--iodepth=8', '--size=64M', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--verify_state_save=0', '--output-format=json'], 180_000);
    for (let i = 0; i < 6; i++) {
      ok(home, ['volume', 'create', `p/t${i}`, '32M']);
      ok(home, ['volume', 'resize', `p/t${i}`, '+32M']);
      ok(home, ['volume', 'list', 'p']);
      expect(ok(home, ['pool', 'check', 'p'])).toMatch(/ 0 problems/);
      ok(home, ['volume', 'delete', `p/t${i}`]);
    }
    const jobs = parseFio(await fio);
    expect(jobs[0]!.error).toBe(0);
    expect(ok(home, ['pool', 'check', 'p'])).toMatch(/ 0 problems/);
  }, 240_000);

  it('answers hostile control requests with an error and keeps serving', async () => {
    for (const line of ['not json\n', '[1,2]\n', '{"op":"nope"}\n', '{"op":"volume-create","volume":"../x","size":1}\n', '{"op":"volume-create","volume":"x","size":-5}\n', '{"op":"volume-info"}\n', `{"op":"map","volume":"${'a'.repeat(500)}"}\n`]) {
      const reply = JSON.parse(await rawControl(home, 'p', line)) as { ok: boolean; error?: string };
      expect(reply.ok, line).toBe(false);
      expect(reply.error).toBeTruthy();
    }
    // A line past the size limit ends that connection, not the server.
    expect(await rawControl(home, 'p', `{"op":"pool-info","x":"${'z'.repeat(MAX_LINE + 1000)}"}\n`)).toMatch(/longer than/);
    expect(fs.statSync(controlSocketPath(home, 'p')).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(controlSocketPath(home, 'p'))).mode & 0o777).toBe(0o700);
    expect(ok(home, ['volume', 'list', 'p'])).toMatch(/base/);
    expect(strata(home, ['volume', 'create', 'p/../etc', '1M']).code).not.toBe(0);
  }, 60_000);
});
