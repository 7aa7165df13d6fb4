import fs from 'node:fs';
import path from 'node:path';
import { BlockDeviceError, FileDevice } from '../blockdev/index.js';
import { Pool } from '../qcowlike/index.js';
import { isFileTooLarge, tooLargeMessage } from './file-size-limit.js';
import { makeHome, removeMadeDirs } from './home.js';
import { oneLine, PoolInUseError } from './pool-errors.js';
import type { BackingType } from './pool-backing.js';
import type { PoolBacking, PoolRecord, Registry } from './registry.js';

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

/** A pool on a new sparse file (HOME/NAME.pool unless `at` is given), registered once it is whole. */
export async function createFileBacked(registry: Registry, name: string, size: number, at: string | undefined, clusterSize: number | undefined): Promise<{ record: PoolRecord; file: string }> {
  const file = at === undefined ? registry.defaultPoolPath(name) : path.resolve(at);
  if (at !== undefined && !fs.existsSync(path.dirname(file))) throw new Error(`directory ${path.dirname(file)} does not exist`);
  const madeDirs = makeHome(registry.home);
  if (fs.existsSync(file)) {
    removeMadeDirs(madeDirs);
    throw new Error(`${file} already exists (pick another path, or delete it first)`);
  }

  const record: PoolRecord = { name, backing: { kind: 'file', path: file }, created: new Date().toISOString() };
  let fileCreated = false;
  try {
    const dev = FileDevice.create(file, { size });
    fileCreated = true;
    let created: Pool;
    try {
      created = await Pool.create(dev, clusterSize === undefined ? {} : { clusterSize });
    } catch (err) {
      await dev.close();
      throw err;
    }
    await created.close();
    registry.add(record);
  } catch (err) {
    // Only a file this command made is removed; one that appeared under the same name meanwhile is someone else's.
    // (FileDevice.create removes the file it made when it fails itself, an EFBIG from ftruncate for one.)
    if (fileCreated) fs.rmSync(file, { force: true });
    // Measured before the directories go: the limit is found by growing a scratch file next to the pool's.
    const error = new Error(`cannot create pool '${name}': ${isFileTooLarge(err) ? tooLargeMessage(file, size) : oneLine(err)}`);
    removeMadeDirs(madeDirs);
    throw error;
  }
  return { record, file };
}
