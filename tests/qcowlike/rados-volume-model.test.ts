import fc from 'fast-check';
import { describe, it } from 'vitest';
import { RadosDevice } from '../../src/blockdev/rados/index.js';
import { cephConf, uniqueName, useTestPool } from '../support/ceph.js';
import { propertyRuns } from '../support/scratch.js';
import { runVolumeModel, volumeOpArb } from '../support/volume-model.js';

const conf = cephConf();

describe.skipIf(conf === undefined)('volume on a RADOS pool against a plain byte array', () => {
  const pool = useTestPool(conf!);

  it('matches the model through writes, zeroes, discards, resizes, flushes and reopens; check stays clean', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(4096, 65536), fc.array(volumeOpArb, { minLength: 1, maxLength: 40 }), async (clusterSize, ops) => {
        const name = uniqueName('model');
        // 1 MiB objects: the pool's metadata and data spread over many of them.
        const dev = await RadosDevice.create(pool(), name, 24 << 20, 1 << 20);
        try {
          await runVolumeModel(dev, clusterSize, ops);
        } finally {
          await dev.close();
          await RadosDevice.destroy(pool(), name);
        }
      }),
      { numRuns: propertyRuns(40, 10) },
    );
  }, 600_000);
});
