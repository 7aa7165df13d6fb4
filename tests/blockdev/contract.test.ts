import path from 'node:path';
import { afterAll, describe } from 'vitest';
import { CrashSimulator, FaultyDevice, FileDevice, MemoryDevice, type FileIoMode } from '../../src/blockdev/index.js';
import { blockDeviceContract } from '../support/blockdev-contract.js';
import { scratchDir } from '../support/scratch.js';

const SIZE = 200 * 1024 + 512;
const scratch = scratchDir('contract');
afterAll(() => scratch.cleanup());
let seq = 0;

const fileSubject = (io: FileIoMode) => ({
  name: `file device (${io} I/O)`,
  size: SIZE,
  make: async () => {
    const p = path.join(scratch.dir, `dev-${seq++}.img`);
    const dev = FileDevice.create(p, { size: SIZE, io });
    return { dev, dispose: () => dev.close() };
  },
});

describe('BlockDevice contract', () => {
  blockDeviceContract({
    name: 'memory device',
    size: SIZE,
    make: async () => {
      const dev = new MemoryDevice({ size: SIZE });
      return { dev, dispose: () => dev.close() };
    },
  });
  blockDeviceContract(fileSubject('sync'));
  blockDeviceContract(fileSubject('async'));
  blockDeviceContract(fileSubject('auto'));
  blockDeviceContract({
    name: 'faulty device with no rule firing',
    size: SIZE,
    make: async () => {
      const dev = new FaultyDevice(new MemoryDevice({ size: SIZE }), { rules: [{ ops: ['read'], probability: 0 }] });
      return { dev, dispose: () => dev.close() };
    },
  });
  blockDeviceContract({
    name: 'crash simulator (no crash)',
    size: SIZE,
    make: async () => {
      const dev = new CrashSimulator(new MemoryDevice({ size: SIZE }));
      return { dev, dispose: () => dev.close() };
    },
  });
});
