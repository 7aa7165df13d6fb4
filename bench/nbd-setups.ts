import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createPoolVolume, serveVolume, startServer, type RunningServer } from './nbd-servers.js';

/** One server of the benchmark: how its image is made and how it is started. */
export interface BenchSetup {
  /** Column label in the tables. */
  name: string;
  /** What exactly runs, for the legend. */
  detail: string;
  /** Makes the image of `size` bytes under `dir`; returns what start() needs. */
  prepare(dir: string, size: number): string;
  start(image: string): Promise<RunningServer>;
}

const EXPORT = 'bench';
const GIB = 1024 ** 3;

function rawImage(file: string, size: number): string {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  return file;
}

/**
 * The product: a thin volume in a sparse pool file (checksums, journal), sized
 * so that the pool never runs out whatever the jobs write.
 */
export const strata: BenchSetup = {
  name: 'strata',
  detail: 'strata serve on a thin volume of a sparse pool file (2× the image + 1G, 64K clusters)',
  prepare: (dir, size) =>
    createPoolVolume({ home: path.join(dir, 'strata-home'), pool: EXPORT, volume: EXPORT }, size, 2 * size + GIB).home,
  start: (home) => serveVolume({ home, pool: EXPORT, volume: EXPORT }),
};

/** Not in the default set: what the protocol costs without the pool format. */
export const strataFile: BenchSetup = {
  name: 'strata-file',
  detail: 'strata serve --file on a raw file',
  prepare: (dir, size) => rawImage(path.join(dir, 'strata.raw'), size),
  start: (image) => startServer('strata', image, { exportName: EXPORT }),
};

export const qemuNbd: BenchSetup = {
  name: 'qemu-nbd',
  detail: 'qemu-nbd -f qcow2 -t -e 8 --cache=writeback --aio=threads on a qcow2 file',
  prepare: (dir, size) => {
    const file = path.join(dir, 'qemu.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(size)], { stdio: 'pipe' });
    return file;
  },
  start: (image) =>
    startServer('qemu-nbd', image, {
      exportName: EXPORT,
      format: 'qcow2',
      extraArgs: ['-e', '8', '--cache=writeback', '--aio=threads'],
    }),
};

export const nbdkit: BenchSetup = {
  name: 'nbdkit',
  detail: 'nbdkit file plugin on a raw file',
  prepare: (dir, size) => rawImage(path.join(dir, 'nbdkit.raw'), size),
  start: (image) => startServer('nbdkit', image, { exportName: EXPORT }),
};
