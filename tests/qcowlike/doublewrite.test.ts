import { describe, expect, it } from 'vitest';
import { CrashSimulator, MemoryDevice } from '../../src/blockdev/index.js';
import { Pool } from '../../src/qcowlike/index.js';
import { initChecksums } from '../../src/qcowlike/checksum.js';
import { DoubleWrite } from '../../src/qcowlike/doublewrite.js';
import { BlockType, sealBlock } from '../../src/qcowlike/metablock.js';
import { pattern } from '../support/blockdev-contract.js';
import { reopenable } from '../support/pool.js';

const C = 4096;

function sealed(type: BlockType, owner: number, fill: number): Buffer {
  const b = Buffer.alloc(C, fill);
  sealBlock(b, type, owner);
  return b;
}

describe('double-write area', () => {
  it('ignores a slot that still holds another block from an earlier checkpoint when only the head landed', async () => {
    await initChecksums();
    const dev = new MemoryDevice({ size: 32 * C });
    const area = new DoubleWrite(dev, 0, 17, C);
    // Checkpoint of generation 1 protects an L1 block at cluster 284.
    await area.write(1n, [{ cluster: 284, image: sealed(BlockType.L1, 1, 1) }]);
    // Checkpoint of generation 2 protects an L2 block at cluster 289, and power fails after its
    // head reached the disk but before its image did: slot 0 still holds the sealed L1 image.
    const elsewhere = new MemoryDevice({ size: 32 * C });
    const l2 = sealed(BlockType.L2, 1, 2);
    await new DoubleWrite(elsewhere, 0, 17, C).write(2n, [{ cluster: 289, image: l2 }]);
    const head = Buffer.alloc(C);
    await elsewhere.read(head, 0);
    await dev.write(head, 0);
    expect(await area.read(2n)).toEqual([]);
    // Where the image did land, it is offered.
    expect(await new DoubleWrite(elsewhere, 0, 17, C).read(2n)).toEqual([{ cluster: 289, image: l2 }]);
  });

  it('a checkpoint of more blocks than the area holds survives power loss at every request', async () => {
    // One overwrite over 8 L2 tables' span changes 8 tables that already exist, and the journal
    // does not hold them whole: a checkpoint of three double-write passes when the area holds 4.
    const span = 8 * 204 * C;
    const data = pattern(span, 3);
    let completed = false;
    for (let cut = 0; !completed; cut++) {
      for (const seed of [cut, cut + 1000, cut + 2000]) {
        const base = new MemoryDevice({ size: span + (8 << 20) });
        {
          const pool = await Pool.create(reopenable(base), { clusterSize: C, doubleWriteBytes: 5 * C });
          await pool.createVolume('v', span);
          const vol = await pool.openVolume('v');
          await vol.write(pattern(span, 2), 0);
          await vol.close();
          await pool.close();
        }
        const sim = new CrashSimulator(base);
        const pool = await Pool.open(sim);
        const vol = await pool.openVolume('v');
        sim.cutAfter(cut);
        let done = false;
        try {
          await vol.write(data, 0);
          await pool.store.checkpoint();
          done = true;
        } catch (err) {
          expect((err as Error).message).toMatch(/lost power/);
        }
        const reopened = await Pool.open((await sim.crash(seed)).device);
        expect((await reopened.check()).problems, `cut after ${cut} requests, seed ${seed}`).toEqual([]);
        if (done) {
          const back = Buffer.alloc(span);
          await (await reopened.openVolume('v')).read(back, 0);
          expect(back.equals(data), 'checkpointed data reads back').toBe(true);
          completed = true;
        }
        await reopened.close();
      }
    }
  }, 300_000);
});
