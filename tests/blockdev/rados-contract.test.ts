import { describe } from 'vitest';
import { RadosDevice } from '../../src/blockdev/rados/index.js';
import { blockDeviceContract } from '../support/blockdev-contract.js';
import { cephConf, uniqueName, useTestPool } from '../support/ceph.js';

const conf = cephConf();
// Small objects so that a request of the generated sizes crosses several of them.
const OBJECT = 16 * 1024;
const SIZE = 200 * 1024 + 512;

describe.skipIf(conf === undefined)('RADOS device', () => {
  const pool = useTestPool(conf!);

  blockDeviceContract({
    name: 'RADOS device over 16K objects',
    size: SIZE,
    runs: 60,
    make: async () => {
      const name = uniqueName('contract');
      const dev = await RadosDevice.create(pool(), name, SIZE, OBJECT);
      return {
        dev,
        dispose: async () => {
          await dev.close();
          await RadosDevice.destroy(pool(), name);
        },
      };
    },
  });
});
