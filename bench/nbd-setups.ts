import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, strataCli, type RunningServer } from './nbd-servers.js';

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

function rawImage(file: string, size: number): string {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  return file;
}

/**
 * The Strata side. THE place to change when Strata serves pool volumes:
 * prepare() would run
 *   strata --home DIR pool create bench --size 4G
 *   strata --home DIR volume create bench/disk 2G
 * and start() would pass
 *   strataArgs: ['--home', DIR, 'serve', 'bench', '--listen', '127.0.0.1:0']
 * (the URI is whatever `strata serve` prints).
 */
export const strata: BenchSetup = {
  name: 'strata',
  detail: 'strata serve --file on a raw file',
  prepare: (dir, size) => rawImage(path.join(dir, 'strata.raw'), size),
  start: (image) => startServer('strata', image, { exportName: EXPORT }),
};

/** Stands in for Strata while `strata serve` does not exist, to prove the harness; labelled as such. */
export const strataStandIn: BenchSetup = {
  name: 'strata*',
  detail: "STAND-IN, not Strata: qemu-nbd -f raw on a raw file, because this build has no 'strata serve'",
  prepare: (dir, size) => rawImage(path.join(dir, 'standin.raw'), size),
  start: (image) => startServer('qemu-nbd', image, { exportName: EXPORT, format: 'raw' }),
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

/** Whether this build has `strata serve` (without it, `serve --help` prints the root program's help). */
export function strataCanServe(): boolean {
  try {
    const help = execFileSync(process.execPath, [strataCli(), 'serve', '--help'], { encoding: 'utf8', stdio: 'pipe' });
    return /Usage: strata serve/.test(help);
  } catch {
    return false;
  }
}
