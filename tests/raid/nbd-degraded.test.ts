import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { Pool, type Volume } from '../../src/qcowlike/index.js';
import { createArray, DATA_OFFSET, memberDataNeeded, type RebuildProgress } from '../../src/raid/index.js';
import { hasTool, parseFio, serveDevices, tool } from '../nbd/support.js';
import { scratchDir } from '../support/scratch.js';
import { expectFills } from './helpers.js';

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
const ARRAY_SIZE = 384 * MiB;
const VOLUME_SIZE = 256 * MiB;
/** Bytes per second of member data: slow enough that fio rounds run while role 1 is rebuilt. */
const REBUILD_RATE = 8 * MiB;

const scratch = scratchDir('raid-nbd');
const haveTools = hasTool('fio') && hasTool('qemu-io');

/** Random 4K writes over [offset, offset + size) of the export, then fio reads every block back and checks its crc32c. */
async function fioVerify(uri: string, offset: number, size: number): Promise<void> {
  const out = await tool('fio', [
    `--name=rw-${offset / MiB}M`, '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
    `--offset=${offset}`, `--size=${size}`, '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0',
    '--output-format=json',
  ], 120_000);
  const [job] = parseFio(out);
  expect(job!.error, `fio at ${offset / MiB}M`).toBe(0);
  expect(job!.write.io_bytes).toBe(size);
  expect(job!.read.io_bytes).toBe(size);
}

async function qemuIo(uri: string, ...cmds: string[]): Promise<string> {
  const out = await tool('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri]);
  expect(out).not.toMatch(/Pattern verification failed|error/i);
  return out;
}

/** The volume as the server sees it, counting the writes that reach it so the test can fail members mid-stream. */
function countingWrites(vol: Volume): { device: BlockDevice; writes: () => number } {
  let n = 0;
  const device = new Proxy(vol, {
    get(target, prop) {
      if (prop === 'write') {
        return (...args: Parameters<Volume['write']>) => {
          n++;
          return target.write(...args);
        };
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { device, writes: () => n };
}

async function until(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Pre-failure patterns: 8 MiB each from 128 MiB on. */
const BEFORE = [0xa5, 0x5a, 0x3c, 0xc3].map((p, i) => ({ p, at: (128 + 8 * i) * MiB, len: 8 * MiB }));

afterAll(() => scratch.cleanup());

describe.skipIf(!haveTools)('a pool on RAID 6 served over NBD, losing two members and rebuilding one under load', () => {
  it('fio and qemu-io verify through the failures and the rebuild; scrub, pool check and the old data agree afterwards', async () => {
    const memberPath = (name: string) => path.join(scratch.dir, `${name}.img`);
    const array = await createArray({ level: 6, members: [0, 1, 2, 3, 4, 5].map((i) => memberPath(`m${i}`)), size: ARRAY_SIZE, chunk: CHUNK, name: 'six' });
    const pool = await Pool.create(array);
    await pool.createVolume('vm', VOLUME_SIZE);
    const vol = await pool.openVolume('vm');
    const counted = countingWrites(vol);
    const srv = await serveDevices([{ name: 'vm', device: counted.device }]);
    const uri = srv.uri('vm');
    try {
      await qemuIo(uri, ...BEFORE.map((b) => `write -P ${b.p} ${b.at} ${b.len}`), 'flush');

      // Round 0 writes [0, 48M) while role 1 and then role 4 fail, and role 1 is replaced and starts rebuilding.
      const progress: RebuildProgress[] = [];
      let rebuilding: Promise<void> | undefined;
      let rebuildDone = false;
      const base = counted.writes();
      const round0 = fioVerify(uri, 0, 48 * MiB);
      const storm = (async () => {
        await until('fio writes before the first failure', () => counted.writes() - base >= 1500);
        await array.fail(1);
        await until('fio writes before the second failure', () => counted.writes() - base >= 3000);
        await array.fail(4);
        expect(array.status()).toMatchObject({ state: 'degraded', degraded: true });
        // Twice degraded: the old data reads back (rebuilt from P and Q on the fly) and new writes land.
        await qemuIo(uri, ...BEFORE.map((b) => `read -P ${b.p} ${b.at} ${b.len}`), 'write -P 0x77 160M 16M', 'read -P 0x77 160M 16M');
        await until('fio writes before the replacement', () => counted.writes() - base >= 4500);
        const fresh = FileDevice.create(memberPath('m1-new'), { size: DATA_OFFSET + memberDataNeeded(6, 6, CHUNK, ARRAY_SIZE) });
        expect(await array.replace(1, fresh)).toBe(1);
        rebuilding = array.rebuild({ rate: REBUILD_RATE, onProgress: (p) => progress.push({ ...p }) }).then(() => {
          rebuildDone = true;
        });
      })();
      await Promise.all([round0, storm]);
      expect(rebuildDone, 'round 0 ended before the rebuild').toBe(false);

      // More rounds for as long as the rebuild runs, with a qemu-io pattern alongside each.
      // Ranges are reused round robin; each fio round verifies what it wrote itself.
      let duringRebuild = 0;
      for (let k = 0; !rebuildDone; k++) {
        if (k === 30) throw new Error(`the rebuild did not finish: ${JSON.stringify(progress.at(-1))}`);
        const at = (176 + 16 * (k % 5)) * MiB;
        const old = BEFORE[k % BEFORE.length]!;
        await Promise.all([
          fioVerify(uri, at, 12 * MiB),
          qemuIo(uri, `write -P ${0x90 + k} ${at + 12 * MiB} 4M`, `read -P ${0x90 + k} ${at + 12 * MiB} 4M`, `read -P ${old.p} ${old.at} ${old.len}`),
        ]);
        duringRebuild++;
      }
      // Round 0 overlapped the rebuild (checked above) and the loop starts every round while it runs: how many fit is the machine's speed, not a property.
      expect(duringRebuild).toBeGreaterThanOrEqual(1);
      await rebuilding;

      expect(progress.length).toBeGreaterThan(1);
      expect(progress.at(-1)).toMatchObject({ role: 1, fraction: 1 });
      const status = array.status();
      expect(status.members[1]).toMatchObject({ state: 'active', device: memberPath('m1-new') });
      expect(['faulty', 'missing']).toContain(status.members[4]!.state);
      expect(status.members.filter((m) => m.state === 'active').map((m) => m.role)).toEqual([0, 1, 2, 3, 5]);
      expect(status.state).toBe('degraded');

      // Everything written before and during the trouble, read once more through NBD.
      await qemuIo(uri, ...BEFORE.map((b) => `read -P ${b.p} ${b.at} ${b.len}`), 'read -P 0x77 160M 16M');
    } finally {
      await srv.close();
    }

    expect((await pool.check()).problems).toEqual([]);
    // Scrub passes over stripes with a member out, so it proves nothing while role 4 is gone: make the
    // array whole first. Every stripe's P and Q are then checked, and a bad block of role 1 would show.
    const fourth = FileDevice.create(memberPath('m4-new'), { size: DATA_OFFSET + memberDataNeeded(6, 6, CHUNK, ARRAY_SIZE) });
    expect(await array.replace(4, fourth)).toBe(4);
    await array.rebuild();
    expect(array.status().state).toBe('optimal');
    expect((await array.scrub()).mismatches).toEqual([]);
    expect((await pool.check()).problems).toEqual([]);
    await expectFills(vol, BEFORE);
    await vol.close();
    await pool.close();
  }, 120_000);
});
