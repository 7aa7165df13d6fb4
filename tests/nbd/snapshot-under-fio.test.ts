import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PoolExportSource } from '../../src/host/pool-exports.js';
import { NbdServer } from '../../src/nbd/index.js';
import type { Pool } from '../../src/qcowlike/index.js';
import { createSnapshots, deleteSnapshot } from '../../src/snapshot/index.js';
import { memoryPool } from '../support/pool.js';
import { scratchDir } from '../support/scratch.js';
import { hasTool, parseFio, tool } from './support.js';

const MiB = 1 << 20;
const scratch = scratchDir('snap-fio');
const tools = ['fio', 'nbdcopy', 'qemu-img'].every((t) => hasTool(t));

/**
 * fio writes with verification through the NBD server while snapshots are
 * taken and deleted under it: fio sees no error and every block verifies;
 * a snapshot copied out (nbdcopy) the moment it was taken still compares
 * equal (qemu-img compare) after the volume went on being written and the
 * snapshots around it were merged away.
 */
describe.skipIf(!tools)('snapshots of a volume that fio is writing', () => {
  let pool: Pool;
  let server: NbdServer;
  let uri = '';

  beforeAll(async () => {
    // Sparse: each snapshot can pin up to the 32 MiB fio writes, so room for all of them and the copies.
    ({ pool } = await memoryPool({ deviceSize: 1024 * MiB }));
    await pool.createVolume('vm', 48 * MiB);
    const source = new PoolExportSource([{ name: 'p', pool }], { readOnly: false, allowIncomplete: false, describe: () => '' });
    server = new NbdServer({ source });
    const bound = await server.listen({ host: '127.0.0.1', port: 0 });
    uri = `nbd://127.0.0.1:${'port' in bound ? bound.port : 0}`;
  });

  afterAll(async () => {
    await server.close();
    await pool.close();
    scratch.cleanup();
  });

  it('fio verifies every block, and each snapshot stays the point it was taken at through later writes and merges', async () => {
    const fio = tool('fio', [
      '--name=snap', '--ioengine=nbd', `--uri=${uri}/vm`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=32M',
      '--loops=2', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json',
    ]);
    let running = true;
    void fio.finally(() => (running = false));
    const copies: Array<{ name: string; file: string }> = [];
    for (let k = 0; running && k < 8; k++) {
      await new Promise((r) => setTimeout(r, 150));
      const name = `s${k}`;
      await createSnapshots(pool, [{ volume: 'vm', snapshot: name }]);
      if (k % 3 === 0) {
        const file = path.join(scratch.dir, `${name}.raw`);
        await tool('nbdcopy', [`${uri}/vm@${name}`, file]);
        copies.push({ name, file });
      }
    }
    const [job] = parseFio(await fio);
    expect(job!.error).toBe(0);
    expect(copies.length).toBeGreaterThan(0);
    // Merge away every snapshot that was not copied, then compare the ones that were.
    const kept = new Set(copies.map((c) => c.name));
    for (const s of pool.catalogNow.snapshots.map((x) => x.name)) if (!kept.has(s)) await deleteSnapshot(pool, { volume: 'vm', snapshot: s });
    for (const c of copies) await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', c.file, `${uri}/vm@${c.name}`]);
    expect((await pool.check()).problems).toEqual([]);
  }, 180_000);
});
