import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withPool } from '../../src/host/open-pool.js';
import { createSnapshots } from '../../src/snapshot/index.js';
import { hasTool, startServe, STRATA, tool, type ServeProcess } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessFails, inProcessJson } from './in-process.js';
import { buildCli } from './strata.js';


const MIB = 1 << 20;

/** Data, a zero run, data: each 4 KiB block stamped with its offset and `seed`. */
function image(seed: number, zeroFrom: number, zeroTo: number, size = 16 * MIB): Buffer {
  const b = Buffer.alloc(size);
  for (let at = 0; at < size; at += 4096) {
    if (at >= zeroFrom && at < zeroTo) continue;
    b.fill(seed, at, at + 4096);
    b.writeUInt32LE(at, at);
  }
  return b;
}

function sh(script: string, env: Record<string, string> = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync('sh', ['-c', script], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('diff, export-diff and import-diff', () => {
  const { dir, cleanup } = scratchDir('diff-cli');
  const home = path.join(dir, 'h');
  const f = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    buildCli();
    await inProcess(home, ['pool', 'create', 'p', '--size', '256M']);
    await inProcess(home, ['pool', 'create', 'q', '--size', '256M']);
    await inProcess(home, ['volume', 'create', 'p/v', '16M']);
  });
  afterAll(() => cleanup());

  it('name what is wrong with their arguments and with a stream that is not one', async () => {
    expect(await inProcessFails(home, ['export-diff', 'p/v', f('x.sd')])).toMatch(/export-diff takes a snapshot \(p\/v@NAME\)/);
    expect(await inProcessFails(home, ['diff', 'p/v'])).toMatch(/names a volume; this command takes a snapshot/);
    expect(await inProcessFails(home, ['diff', 'p/v@a', 'p/other@b'])).toMatch(/is not a snapshot of p\/v/);
    fs.writeFileSync(f('junk'), Buffer.alloc(4096, 0x41));
    expect(await inProcessFails(home, ['import-diff', 'q/w', f('junk')])).toMatch(/not a Strata diff stream/);
    fs.writeFileSync(f('rbd'), 'rbd diff v2\n' + 'x'.repeat(100));
    expect(await inProcessFails(home, ['import-diff', 'q/w', f('rbd')])).toMatch(/this is an RBD diff/);
    const piped = sh(`printf 'not a stream at all, not at all' | node ${STRATA} --home ${home} import-diff q/w -`);
    expect(piped.code).toBe(1);
    expect(piped.stderr).toMatch(/^strata: .*not a Strata diff stream/);
    // Nothing was created on the way.
    expect(await inProcessJson<Array<{ name: string }>>(home, ['volume', 'list', 'q'])).toEqual([]);
  });

  describe('with snapshots', () => {
    let ref1: string;
    let ref2: string;
    const snapshot = (pool: string, volume: string, name: string): Promise<unknown> => withPool(home, pool, { readOnly: false }, ({ pool: p }) => createSnapshots(p, [{ volume, snapshot: name }]));
    const same = async (pool: string, volume: string, reference: string): Promise<void> => {
      const out = f(`${pool}-${volume}-${Date.now()}.raw`);
      await inProcess(home, ['export', `${pool}/${volume}`, out]);
      await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', out, reference]);
      fs.rmSync(out);
    };

    beforeAll(async () => {
      expect(hasTool('qemu-img')).toBe(true);
      ref1 = f('ref1.raw');
      ref2 = f('ref2.raw');
      fs.writeFileSync(ref1, image(0x11, 4 * MIB, 9 * MIB));
      await inProcess(home, ['import', '--force', 'p/v', ref1]);
      await snapshot('p', 'v', 's1');
      // The second point rewrites some data and zeroes a range that held data.
      const two = image(0x11, 4 * MIB, 9 * MIB);
      two.fill(0x22, 1 * MIB, 2 * MIB);
      two.fill(0, 12 * MIB, 13 * MIB);
      fs.writeFileSync(ref2, two);
      await inProcess(home, ['import', '--force', 'p/v', ref2]);
      await snapshot('p', 'v', 's2');
    });

    it('diff lists the changed ranges as rbd diff does, and --json gives them as an array', async () => {
      const ranges = await inProcessJson<Array<{ offset: number; length: number; kind: string }>>(home, ['diff', 'p/v@s1', '@s2']);
      expect(ranges.length).toBeGreaterThan(0);
      expect(ranges.some((r) => r.kind === 'zero' && r.offset <= 12 * MIB && r.offset + r.length >= 13 * MIB)).toBe(true);
      const human = await inProcess(home, ['diff', 'p/v@s1', 'p/v@s2']);
      expect(human.split('\n')[0]).toMatch(/^\s*OFFSET\s+LENGTH\s+TYPE$/);
    });

    it('a full stream and an incremental rebuild the volume; qemu-img compare finds each point equal', async () => {
      await inProcess(home, ['export-diff', 'p/v@s1', f('full.sd')]);
      await inProcess(home, ['export-diff', 'p/v@s2', '--from', '@s1', f('incr.sd')]);
      expect(fs.statSync(f('incr.sd')).size).toBeLessThan(fs.statSync(f('full.sd')).size);
      const first = await inProcessJson<{ createdVolume: boolean; snapshot: { name: string } }>(home, ['import-diff', 'q/w', f('full.sd')]);
      expect(first).toMatchObject({ createdVolume: true, snapshot: { name: 's1' } });
      await same('q', 'w', ref1);
      await inProcess(home, ['import-diff', 'q/w', f('incr.sd')]);
      await same('q', 'w', ref2);
      expect(await inProcessFails(home, ['import-diff', 'q/w', f('incr.sd')])).toMatch(/holds this stream's end point already, as @s2/);
    });

    it('refuses a stream whose base is another snapshot of the same name', async () => {
      await inProcess(home, ['volume', 'create', 'q/other', '16M']);
      await snapshot('q', 'other', 's1');
      expect(await inProcessFails(home, ['import-diff', 'q/other', f('incr.sd')])).toMatch(/does not apply to q\/other: its snapshot @s1 is another snapshot/);
    });

    it('an import of a truncated stream stops, saying so, and the whole stream then finishes it', async () => {
      await inProcess(home, ['import-diff', 'q/cut', f('full.sd')]);
      const whole = fs.readFileSync(f('incr.sd'));
      fs.writeFileSync(f('cut.sd'), whole.subarray(0, Math.floor(whole.length * 0.6)));
      expect(await inProcessFails(home, ['import-diff', 'q/cut', f('cut.sd')])).toMatch(/stopped: truncated: .*q\/cut holds @s1 plus part of the stream: run import-diff again/);
      expect(await inProcess(home, ['import-diff', 'q/cut', f('incr.sd')])).toMatch(/finished an import that was cut short/);
      await same('q', 'cut', ref2);
    });

    it('streams through a pipe with -', async () => {
      const r = sh(`node ${STRATA} --home ${home} export-diff p/v@s2 - | node ${STRATA} --home ${home} import-diff q/piped -`);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/exported p\/v \(full\) to @s2 to stdout/);
      await same('q', 'piped', ref2);
    });

    describe('on served pools', () => {
      let srv: ServeProcess | undefined;
      let unserved: unknown;
      beforeAll(async () => {
        unserved = await inProcessJson(home, ['diff', 'p/v@s1', '@s2']);
        srv = await startServe(['--home', home, 'p', 'q', '--listen', '127.0.0.1:0']);
      });
      afterAll(async () => {
        await srv?.stop();
      });

      it('export-diff reads from the server and import-diff writes through it, files and pipes alike', async () => {
        // diff is an admin verb: the server answers it, the same ranges as in-process.
        expect(await inProcessJson(home, ['diff', 'p/v@s1', '@s2'])).toEqual(unserved);
        await inProcess(home, ['export-diff', 'p/v@s1', f('served-full.sd')]);
        await inProcess(home, ['import-diff', 'q/served', f('served-full.sd')]);
        const r = sh(`node ${STRATA} --home ${home} export-diff p/v@s2 --from @s1 - | node ${STRATA} --home ${home} import-diff q/served -`);
        expect(r.code, r.stderr).toBe(0);
        expect(await inProcessFails(home, ['import-diff', 'q/served', f('junk')])).toMatch(/not a Strata diff stream/);
        await srv!.stop();
        srv = undefined;
        await same('q', 'served', ref2);
      });
    });
  });
});
