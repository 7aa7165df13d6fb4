import { describe } from 'vitest';
import { blockDeviceContract } from '../support/blockdev-contract.js';
import { memoryPool } from '../support/pool.js';

const SIZE = 300 * 1024 + 512;

describe('volume BlockDevice contract', () => {
  for (const clusterSize of [4096, 16384, 65536]) {
    blockDeviceContract({
      name: `volume with ${clusterSize / 1024}K clusters`,
      size: SIZE,
      maxLength: 150_000,
      runs: 250,
      make: async () => {
        const { pool } = await memoryPool({ deviceSize: 16 << 20, clusterSize, cacheBytes: 8 * clusterSize, journalBytes: 256 * 1024 });
        await pool.createVolume('v', SIZE);
        const dev = await pool.openVolume('v');
        return { dev, dispose: async () => { await dev.close(); await pool.close(); } };
      },
    });
  }
});
