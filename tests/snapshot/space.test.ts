import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { chainTree, createSnapshots, deleteSnapshot, listSnapshots, revertSnapshot } from '../../src/snapshot/index.js';
import { pattern } from '../support/blockdev-contract.js';
import { scratchDir } from '../support/scratch.js';

const du = (p: string): number => fs.statSync(p).blocks * 512;
const MiB = 1 << 20;
let cleanup: (() => void) | undefined;
afterEach(() => cleanup?.());

async function filePool(): Promise<{ pool: Pool; file: string }> {
  const s = scratchDir('strata-snap-space');
  cleanup = s.cleanup;
  const file = path.join(s.dir, 'pool.img');
  const pool = await Pool.create(FileDevice.create(file, { size: 256 * MiB }));
  return { pool, file };
}

describe('the space a snapshot holds', () => {
  it('is what snapshot list says, and deleting it gives exactly that back to the pool and to the host file (oldest, middle, and one shared by a branch)', async () => {
    const { pool, file } = await filePool();
    await pool.createVolume('v', 64 * MiB);
    const v = await pool.openVolume('v');
    // Each snapshot overwrites a part of the last one: 8, 4 and 2 MiB of whole clusters become its own.
    await v.write(pattern(16 * MiB, 1), 0);
    await createSnapshots(pool, [{ volume: 'v', snapshot: 'a' }]);
    await v.write(pattern(8 * MiB, 2), 0);
    await createSnapshots(pool, [{ volume: 'v', snapshot: 'b' }]);
    await v.write(pattern(4 * MiB, 3), 0);
    await createSnapshots(pool, [{ volume: 'v', snapshot: 'c' }]);
    await v.write(pattern(2 * MiB, 4), 0);
    await v.flush();
    const listed = new Map((await listSnapshots(pool, 'v')).map((s) => [s.name, s.exclusiveBytes]));
    expect(Object.fromEntries(listed)).toEqual({ a: 8 * MiB, b: 4 * MiB, c: 2 * MiB });
    for (const name of ['b', 'a']) {
      const free = pool.stats().freeClusters;
      const disk = du(file);
      const { freedBytes } = await deleteSnapshot(pool, { volume: 'v', snapshot: name });
      await pool.flush();
      expect(freedBytes, `freed by deleting ${name}`).toBe(listed.get(name));
      // The clusters come back (the map tables that held them too), and the host file shrinks as much.
      expect((pool.stats().freeClusters - free) * 65536).toBeGreaterThanOrEqual(listed.get(name)!);
      expect(disk - du(file)).toBeGreaterThanOrEqual(listed.get(name)!);
    }
    // A branch: c gets a second child, so deleting it keeps what either reads and frees nothing else.
    await revertSnapshot(pool, { volume: 'v', snapshot: 'c' }, { force: true });
    await v.write(pattern(1 * MiB, 5), 32 * MiB);
    await createSnapshots(pool, [{ volume: 'v', snapshot: 'd' }]);
    const shared = (await listSnapshots(pool, 'v')).find((s) => s.name === 'c')!.exclusiveBytes;
    const { freedBytes } = await deleteSnapshot(pool, { volume: 'v', snapshot: 'c' });
    expect(freedBytes).toBe(shared);
    const tree = await chainTree(pool, 'v');
    expect(tree.kind).toBe('snapshot');
    expect(tree.name).toBe('v@d');
    const back = Buffer.alloc(2 * MiB);
    await v.read(back, 0);
    expect(back.equals(pattern(4 * MiB, 3).subarray(0, 2 * MiB))).toBe(true);
    await v.close();
    expect((await pool.check()).problems).toEqual([]);
    await pool.close();
  });
});
