import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/index.js';
import { withPool } from '../../src/host/open-pool.js';
import type { Pool } from '../../src/qcowlike/index.js';
import { cloneVolume, convertToTemplate, createSnapshots, listSnapshots, listTemplates } from '../../src/snapshot/index.js';
import { hasTool, startServe, STRATA, tool, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { volumeBytes } from '../support/volume-bytes.js';
import { write } from '../migrate/chain-support.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { buildCli } from './strata.js';

/**
 * strata send, receive and migrate as a user runs them: through pipes and
 * files, cut short and resumed, on pools served and not; every result is
 * compared with qemu-img compare against the raw image it must equal.
 */

const MIB = 1 << 20;

/** Blocks stamped with their offset and `seed`, with a zero run. */
function image(seed: number, size = 8 * MIB): Buffer {
  const b = Buffer.alloc(size);
  for (let at = 0; at < size; at += 4096) {
    if (at >= 3 * MIB && at < 4 * MIB) continue;
    b.fill(seed, at, at + 4096);
    b.writeUInt32LE(at, at);
  }
  return b;
}

function sh(script: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync('sh', ['-c', script], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('send, receive and migrate', () => {
  const { dir, cleanup } = scratchDir('send-cli');
  const home = path.join(dir, 'h');
  const f = (name: string): string => path.join(dir, name);
  const S = `node ${STRATA} --home ${home}`;
  let ref1: string;
  let ref2: string;
  let ref3: string;

  /** What the volume reads, against the file, read in-process (qemu-img compare checks the points that matter most). */
  const reads = async (ref: string, reference: string): Promise<void> => {
    const [pool, volume] = ref.split('/') as [string, string];
    const got = await inPool(pool, (p) => volumeBytes(p, volume));
    expect(got.equals(fs.readFileSync(reference)), `${ref} against ${reference}`).toBe(true);
  };
  const same = async (ref: string, reference: string): Promise<void> => {
    const out = f(`${ref.replace('/', '-')}-${Date.now()}.raw`);
    await inProcess(home, ['export', ref, out]);
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', out, reference]);
    fs.rmSync(out);
  };
  // Set-up and inspection run in-process (each strata process costs a second on a loaded machine); the commands under test run as a user runs them.
  const inPool = <T>(pool: string, fn: (p: Pool) => Promise<T>): Promise<T> => withPool(home, pool, { readOnly: false }, ({ pool: p }) => fn(p));
  const snaps = (ref: string): Promise<string[]> => inPool(ref.split('/')[0]!, async (p) => (await listSnapshots(p, ref.split('/')[1]!)).map((x) => x.name));
  const volumes = (pool: string): Promise<string[]> => inPool(pool, async (p) => (await p.listVolumes()).map((v) => v.name));
  const checkClean = async (...pools: string[]): Promise<void> => {
    for (const pool of pools) expect((await inPool(pool, (p) => p.check())).problems, pool).toEqual([]);
  };

  beforeAll(async () => {
    expect(hasTool('qemu-img')).toBe(true);
    buildCli();
    for (const p of ['p', 'q']) await inProcess(home, ['pool', 'create', p, '--size', '256M']);
    await inPool('p', (p) => p.createVolume('v', 8 * MIB));
    ref1 = f('ref1.raw');
    ref2 = f('ref2.raw');
    ref3 = f('ref3.raw');
    fs.writeFileSync(ref1, image(0x11));
    const two = image(0x11);
    two.fill(0x22, 1 * MIB, 2 * MIB);
    two.fill(0, 6 * MIB, 7 * MIB);
    fs.writeFileSync(ref2, two);
    const three = Buffer.from(two);
    three.fill(0x33, 5 * MIB, 5 * MIB + 65536);
    fs.writeFileSync(ref3, three);
    await inPool('p', async (p) => {
      for (const [data, snap] of [[image(0x11), 's1'], [two, 's2'], [three, null]] as const) {
        await write(p, 'v', 0, data);
        if (snap) await createSnapshots(p, [{ volume: 'v', snapshot: snap }]);
      }
    });
  });
  afterAll(() => cleanup());

  it('a whole stream, then an incremental one, rebuild the volume; the volume as it is now leaves no snapshot behind', async () => {
    const r = sh(`${S} send p/v@s1 | ${S} receive q/w`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/sent p\/v to @s1: 1 section/);
    expect(r.stderr).toMatch(/received into q\/w \(created the volume\): snapshots @s1/);
    await same('q/w', ref1);
    const inc = sh(`${S} send p/v@s2 --from @s1 | ${S} receive q/w`);
    expect(inc.code, inc.stderr).toBe(0);
    await reads('q/w', ref2);
    expect(await snaps('q/w')).toEqual(['s1', 's2']);
    const now = sh(`${S} send p/v --from @s2 | ${S} --json receive q/w`);
    expect(now.code, now.stderr).toBe(0);
    await same('q/w', ref3);
    expect(await snaps('q/w')).toEqual(['s1', 's2']);
    expect(await snaps('p/v')).toEqual(['s1', 's2']);
    await checkClean('q');
  });

  it('refuses a stream on the wrong base and a bad token', async () => {
    await inPool('q', async (p) => {
      await p.createVolume('other', 8 * MIB);
      await createSnapshots(p, [{ volume: 'other', snapshot: 's1' }]);
    });
    const wrong = sh(`${S} send p/v@s2 --from @s1 | ${S} receive q/other`);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/strata: the stream does not apply to q\/other: its snapshot @s1 is another snapshot/);
    expect(await snaps('q/other')).toEqual(['s1']);
    // A reader that goes away fails the send in one line; the snapshot it took for the volume as it is now is kept for a resume, and named.
    const gone = sh(`${S} send p/v | head -c 100 > /dev/null; exit \${PIPESTATUS:-0}`);
    expect(gone.stderr).toMatch(/^strata: the reader of the stream went away \(a broken pipe\); the snapshot p\/v@(send-tmp-[0-9a-f]{12}) taken for this send stays/);
    const temp = /@(send-tmp-[0-9a-f]{12})/.exec(gone.stderr)![1]!;
    expect(await snaps('p/v')).toEqual(['s1', 's2', temp]);
    await inProcess(home, ['snapshot', 'delete', `p/v@${temp}`]);
    const bad = sh(`${S} send p/v@s2 --resume strata1-AAAA > /dev/null`);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^strata: bad resume token/);
    expect(await inProcessFails(home, ['receive', 'q/nothing', '--token'])).toMatch(/no interrupted receive into q\/nothing/);
  });

  it('a receive of a cut stream keeps what arrived and gives a token; send --resume finishes it exactly', async () => {
    const whole = f('whole.ss');
    expect(sh(`${S} send p/v@s2 > ${whole}`).code).toBe(0);
    const size = fs.statSync(whole).size;
    const cut = Math.floor(size * (0.3 + Math.random() * 0.6));
    const r = sh(`head -c ${cut} ${whole} | ${S} receive q/cut`);
    expect(r.code).toBe(1);
    const line = r.stderr.trim();
    expect(line.split('\n')).toHaveLength(1);
    expect(line).toMatch(/receive into q\/cut stopped: send stream: truncated.*resume token strata1-/);
    const token = (await inProcess(home, ['receive', 'q/cut', '--token'])).trim();
    expect(line.endsWith(token)).toBe(true);
    const resumed = sh(`${S} send p/v@s2 --resume ${token} | ${S} receive q/cut`);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(/\(resumed\)/);
    await same('q/cut', ref2);
    expect(await snaps('q/cut')).toEqual(['s1', 's2']);
    expect(await inProcessFails(home, ['receive', 'q/cut', '--token'])).toMatch(/no interrupted receive/);
    await checkClean('q');
  });

  it('a receiving process killed with SIGKILL is resumed with the token it left', async () => {
    const whole = fs.readFileSync(f('whole.ss'));
    const child = spawn(process.execPath, [STRATA, '--home', home, 'receive', 'q/killed'], { stdio: ['pipe', 'ignore', 'pipe'] });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.stdin.on('error', () => undefined);
    child.stdin.write(whole.subarray(0, Math.floor(whole.length * 0.7)));
    // Until the receive is under way (its note is written), then killed mid-stream.
    const note = path.join(home, 'receives', 'q.json');
    for (let i = 0; i < 200 && !(fs.existsSync(note) && fs.readFileSync(note, 'utf8').includes('killed')); i++) await new Promise((r) => setTimeout(r, 25));
    child.kill('SIGKILL');
    await exited;
    const token = (await inProcess(home, ['receive', 'q/killed', '--token'])).trim();
    const resumed = sh(`${S} send p/v@s2 --resume ${token} | ${S} receive q/killed`);
    expect(resumed.code, resumed.stderr).toBe(0);
    await reads('q/killed', ref2);
    await checkClean('q');
  });

  it('migrate moves a volume with its snapshots, or copies it with --keep-source; a cancel leaves the source whole and no target', async () => {
    await inPool('p', async (p) => {
      await p.createVolume('m', 8 * MIB);
      await write(p, 'm', 0, image(0x11));
      await createSnapshots(p, [{ volume: 'm', snapshot: 'a' }]);
      await write(p, 'm', 0, fs.readFileSync(ref2));
    });
    const copied = await inProcessJson<{ sourceKept: boolean; snapshots: string[] }>(home, ['migrate', 'p/m', 'q/m-copy', '--keep-source']);
    expect(copied).toMatchObject({ sourceKept: true, snapshots: ['a'] });
    await reads('q/m-copy', ref2);
    expect(await snaps('p/m')).toEqual(['a']);
    // Ctrl-C part-way through a slow migration.
    const child = spawn(process.execPath, [STRATA, '--home', home, 'migrate', 'p/m', 'q', '--rate', '2M'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    // Once its job is recorded as running (the copy under way), never before its handler is in place.
    const jobs = path.join(home, 'jobs', 'p.json');
    const running = (): boolean => fs.existsSync(jobs) && (JSON.parse(fs.readFileSync(jobs, 'utf8')) as { jobs: Array<{ kind: string; state: string }> }).jobs.some((j) => j.kind === 'migrate' && j.state === 'running');
    for (let i = 0; i < 400 && !running(); i++) await new Promise((r) => setTimeout(r, 25));
    await new Promise((r) => setTimeout(r, 300));
    child.kill('SIGINT');
    expect(await code, err).toBe(1);
    expect(await volumes('q')).not.toContain('m');
    expect(await snaps('p/m')).toEqual(['a']);
    await reads('p/m', ref2);
    const moved = await inProcess(home, ['migrate', 'p/m', 'q']);
    expect(moved).toMatch(/^moved p\/m to q\/m with @a: .* verified/);
    expect(await volumes('p')).not.toContain('m');
    expect(await snaps('q/m')).toEqual(['a']);
    await same('q/m', ref2);
    expect((await inProcessJson<Array<{ kind: string; state: string }>>(home, ['job', 'list', 'p'])).filter((j) => j.kind === 'migrate').map((j) => j.state)).toEqual(['done', 'cancelled', 'done']);
    await checkClean('p', 'q');
  });

  it('migrating two clones of a template copies the template once, and they stay linked to it', async () => {
    await inPool('p', async (p) => {
      await p.createVolume('tmpl', 8 * MIB);
      await write(p, 'tmpl', 0, image(0x11));
      await convertToTemplate(p, 'tmpl');
      for (const c of ['c1', 'c2']) {
        await cloneVolume(p, { template: 'tmpl' }, c);
        await createSnapshots(p, [{ volume: c, snapshot: 'x' }]);
      }
    });
    const used = (): Promise<number> => inPool('q', async (p) => p.stats().usedClusters * p.stats().clusterSize);
    const before = await used();
    const first = await inProcessJson<{ origin: { template: string; reused: boolean } }>(home, ['migrate', 'p/c1', 'q']);
    expect(first.origin).toEqual({ template: 'tmpl', reused: false });
    const afterFirst = await used();
    const second = await inProcessJson<{ origin: { template: string; reused: boolean }; streamBytes: number }>(home, ['migrate', 'p/c2', 'q']);
    expect(second.origin).toEqual({ template: 'tmpl', reused: true });
    // Nor did the template's bytes travel again: the pool had it, so the stream left it out.
    expect(second.streamBytes).toBeLessThan(MIB);
    // The template's 7 MiB of data went in once; the second clone added next to nothing.
    expect(afterFirst - before).toBeGreaterThan(6 * MIB);
    expect((await used()) - afterFirst).toBeLessThan(MIB);
    const t = await inPool('q', (p) => listTemplates(p));
    expect(t.map((x) => [x.name, [...x.dependants].sort()])).toEqual([['tmpl', ['c1', 'c1@x', 'c2', 'c2@x']]]);
    await checkClean('q');
  });

  it('a volume whose snapshots have clones stays unless --keep-source; a taken target name is refused', async () => {
    await inPool('p', (p) => cloneVolume(p, { volume: 'v', snapshot: 's1' }, 'v-clone'));
    expect(await inProcessFails(home, ['migrate', 'p/v', 'q/v2'])).toMatch(/p\/v cannot leave pool 'p': v-clone is a clone of its snapshots there/);
    await inPool('q', (p) => p.createVolume('taken', MIB));
    expect(await inProcessFails(home, ['migrate', 'p/v', 'q/taken', '--keep-source'])).toMatch(/q\/taken exists: migrate to a new name/);
    expect(await volumes('q')).not.toContain('v2');
    expect(await snaps('p/v')).toEqual(['s1', 's2']);
  });

  describe('on served pools', () => {
    let srv: ServeProcess | undefined;
    beforeAll(async () => {
      srv = await startServe(['--home', home, 'p', 'q', '--listen', '127.0.0.1:0']);
    });
    afterAll(async () => {
      await srv?.stop();
    });

    it('send, receive (cut short and resumed) and migrate go through the server; a volume with clients is refused with --online named', async () => {
      // Cut short on its way into the server: the token is the server's note, and the resume goes through it too.
      const cut = sh(`${S} send p/v@s2 | head -c 3000000 | ${S} receive q/served`);
      // (The sender's broken pipe is the other line.)
      expect(cut.stderr).toMatch(/^strata: receive into q\/served stopped: send stream: truncated[^\n]*resume token strata1-\S+$/m);
      const token = (await inProcess(home, ['receive', 'q/served', '--token'])).trim();
      const r = sh(`${S} send p/v@s2 --resume ${token} | ${S} receive q/served`);
      expect(r.code, r.stderr).toBe(0);
      const port = Number(new URL(srv!.uri).port);
      const client = await NbdClient.connect({ host: '127.0.0.1', port, export: 'q/served' });
      try {
        expect(await inProcessFails(home, ['migrate', 'q/served', 'p'])).toMatch(/q\/served is served and has 1 connected client: use --online/);
      } finally {
        await client.disconnect();
      }
      // Disconnects are seen by the server a moment later.
      let moved = '';
      for (let i = 0; i < 50 && moved === ''; i++) {
        const m = sh(`${S} migrate q/served p`);
        if (m.code === 0) moved = m.stdout;
        else await new Promise((res) => setTimeout(res, 100));
      }
      expect(moved).toMatch(/moved q\/served to p\/served with @s1 @s2/);
      await srv!.stop();
      srv = undefined;
      await reads('p/served', ref2);
      expect(await volumes('q')).not.toContain('served');
      await checkClean('p', 'q');
    });
  });
});
