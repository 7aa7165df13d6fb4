import fs from 'node:fs';
import { BlockDeviceError, FileDevice } from '../blockdev/index.js';
import { oneLine, PoolInUseError } from './pool-errors.js';
import type { BackingType } from './pool-backing.js';
import type { PoolBacking } from './registry.js';

/** A pool on one (sparse) file. */
export const fileBacking: BackingType = {
  absolute: (registry, record) => ({ kind: 'file', path: registry.filePath(record) }),
  describe: (b: PoolBacking) => (b.kind === 'file' ? b.path : ''),
  files: (registry, record) => [registry.filePath(record)],
  open: async (registry, record, opts) => {
    const path = registry.filePath(record);
    if (!fs.existsSync(path)) throw new Error(`pool '${record.name}': its file ${path} is missing`);
    try {
      return { dev: FileDevice.open(path, { readOnly: opts.readOnly, direct: opts.direct ?? false }) };
    } catch (err) {
      if (err instanceof BlockDeviceError && err.code === 'EBUSY') {
        throw new PoolInUseError(`pool '${record.name}' is in use by another process (${path} is locked)`);
      }
      throw new Error(`pool '${record.name}': ${oneLine(err)}`);
    }
  },
};
