import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_CACHE } from '../src/qcowlike/pool.js';
import { prefill } from './nbd-fio.js';
import { emptyOverChain, fillChain } from './nbd-chain-fill.js';
import { createPoolVolume, serveVolume, startBareServer, startServer, type RunningServer } from './nbd-servers.js';

/** One server of the benchmark: how its image is made and how it is started. */
export interface BenchSetup {
  /** Column label in the tables. */
  name: string;
  /** What exactly runs, for the legend. */
  detail: string;
  /** Makes the image of `size` bytes under `dir`; returns what start() needs. */
  prepare(dir: string, size: number): string;
  start(image: string): Promise<RunningServer>;
  /** Writes the measured region before the rounds so that reads meet data (without it: fillSetup's prefill). */
  fill?(image: string, server: RunningServer, ioSize: number, log: (line: string) => void): Promise<void>;
  /** Brings the image back to the state every job is to meet (the chain: the volume empty over its snapshots). */
  beforeJob?(image: string): Promise<void>;
  /** Strata's metadata cache budget, against which its peak RSS is read (the target: budget + 100 MiB). */
  cacheBudget?: number;
}

/** What every setup without a fill of its own gets: the measured region written once with 1 MiB writes. */
export function fillSetup(setup: BenchSetup, image: string, server: RunningServer, ioSize: number, log: (line: string) => void): Promise<void> {
  return setup.fill ? setup.fill(image, server, ioSize, log) : prefill(server.uri, ioSize);
}

const EXPORT = 'bench';
const GIB = 1024 ** 3;
/** The pools' cluster size: `pool create`'s default. */
const CLUSTER = 64 * 1024;
const CHAIN_SNAPSHOTS = 64;
const RAID5_MEMBERS = 4;

function rawImage(file: string, size: number): string {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  return file;
}

const serveBench = (home: string) => serveVolume({ home, pool: EXPORT, volume: EXPORT });

/**
 * The product: a thin volume in a sparse pool file (checksums, journal), sized
 * so that the pool never runs out whatever the jobs write.
 */
export const strata: BenchSetup = {
  name: 'strata',
  detail: 'strata serve on a thin volume of a sparse pool file (2× the image + 1G, 64K clusters)',
  prepare: (dir, size) =>
    createPoolVolume({ home: path.join(dir, 'strata-home'), pool: EXPORT, volume: EXPORT }, size, 2 * size + GIB).home,
  start: serveBench,
  cacheBudget: DEFAULT_CACHE,
};

/** The same volume with a chain of snapshots under it, laid as nbd-chain-fill.ts says. */
export const strataChain64: BenchSetup = {
  name: `strata-chain${CHAIN_SNAPSHOTS}`,
  detail:
    `strata serve on a thin volume with ${CHAIN_SNAPSHOTS} snapshots under it: the measured region prefilled and snapshotted, ` +
    `then ${CHAIN_SNAPSHOTS - 1} times a random 1/${CHAIN_SNAPSHOTS} of its 64K clusters rewritten (qemu-io over NBD) and snapshotted ` +
    '(strata snapshot create); before each job the volume is reverted to the newest snapshot (strata snapshot revert), so reads find ' +
    'their data in layers spread over the whole chain and writes copy clusters up',
  prepare: (dir, size) =>
    // The chain holds the region about twice over; the jobs' writes copy clusters up into the volume.
    createPoolVolume({ home: path.join(dir, 'strata-chain-home'), pool: EXPORT, volume: EXPORT }, size, 4 * size + GIB).home,
  start: serveBench,
  fill: (home, server, ioSize, log) =>
    fillChain({ home, pool: EXPORT, volume: EXPORT, uri: server.uri, ioSize, clusterSize: CLUSTER, snapshots: CHAIN_SNAPSHOTS }, log),
  beforeJob: (home) => emptyOverChain(home, EXPORT, EXPORT, CHAIN_SNAPSHOTS),
  cacheBudget: DEFAULT_CACHE,
};

export const strataRaid5: BenchSetup = {
  name: 'strata-raid5',
  detail: `strata serve on a thin volume of a pool on RAID 5 over ${RAID5_MEMBERS} sparse member files (strata pool create --raid 5, default chunk)`,
  prepare: (dir, size) => {
    const members = Array.from({ length: RAID5_MEMBERS }, (_, i) => path.join(dir, 'raid5', `m${i}`));
    fs.mkdirSync(path.join(dir, 'raid5'), { recursive: true });
    const home = path.join(dir, 'strata-raid5-home');
    return createPoolVolume({ home, pool: EXPORT, volume: EXPORT }, size, 2 * size + GIB, ['--raid', '5', '--members', members.join(',')]).home;
  },
  start: serveBench,
  cacheBudget: DEFAULT_CACHE,
};

/** Not in the default set: what the protocol costs without the pool format. */
export const strataFile: BenchSetup = {
  name: 'strata-file',
  detail: 'strata serve --file on a raw file',
  prepare: (dir, size) => rawImage(path.join(dir, 'strata.raw'), size),
  start: (image) => startServer('strata', image, { exportName: EXPORT }),
};

/** The line of what Node and the kernel do on this machine with no format at all. */
export const nodeBare: BenchSetup = {
  name: 'node-bare',
  detail: 'bench/nbd-bare.ts: the smallest Node NBD server (simple replies, readSync/writevSync of a raw file on the main thread, replies corked per turn)',
  prepare: (dir, size) => rawImage(path.join(dir, 'node-bare.raw'), size),
  start: (image) => startBareServer(image, EXPORT),
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

export const SETUPS: readonly BenchSetup[] = [strata, strataChain64, strataRaid5, strataFile, nodeBare, qemuNbd, nbdkit];
