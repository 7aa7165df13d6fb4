import { afterAll, beforeAll, describe } from 'vitest';
import { RadosDevice, type RadosCluster, type RadosIoctx } from '../../src/blockdev/rados/index.js';
import { blockDeviceContract } from '../support/blockdev-contract.js';
import { cephConf, connect, TEST_CEPH_POOL, uniqueName } from '../support/ceph.js';

const conf = cephConf();
// Small objects so that a request of the generated sizes crosses several of them.
const OBJECT = 16 * 1024;
const SIZE = 200 * 1024 + 512;

describe.skipIf(conf === undefined)('RADOS device', () => {
  let cluster: RadosCluster;
  let io: RadosIoctx;
  beforeAll(async () => {
    cluster = await connect(conf!);
    io = await cluster.ioctx(TEST_CEPH_POOL);
  });
  afterAll(async () => {
    io?.close();
    await cluster?.close();
  });

  blockDeviceContract({
    name: 'RADOS device over 16K objects',
    size: SIZE,
    runs: 60,
    make: async () => {
      const name = uniqueName('contract');
      const dev = await RadosDevice.create(io, name, SIZE, OBJECT);
      return {
        dev,
        dispose: async () => {
          await dev.close();
          await RadosDevice.destroy(io, name);
        },
      };
    },
  });
});
