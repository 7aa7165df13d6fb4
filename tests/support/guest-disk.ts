import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  createPoolVolume,
  serveVolume,
  startServer,
  strataCli,
  type PoolVolume,
  type RunningServer,
  type ServerKind,
} from '../../bench/nbd-servers.js';

/** What `strata --json pool check` reports. */
export interface PoolCheck {
  clean: boolean;
  problems: unknown[];
  clustersChecked: number;
  corruptBlocks: number;
  leakedClusters: number;
}

/**
 * The disk a guest boots on. For Strata it is a thin volume in a pool of its
 * own home, the product as users run it; for the reference servers a raw file.
 */
export interface GuestDisk {
  /** A fresh server process on the disk; every boot gets its own, so it sees only what reached storage. */
  serve(): Promise<RunningServer>;
  /** `strata pool check` of the volume's pool with no server running; undefined for a raw file. */
  checkPool(): PoolCheck | undefined;
  remove(): void;
  /** Where the disk lives when it is a pool volume. */
  volume?: PoolVolume;
}

const EXPORT = 'guest';

export function createGuestDisk(kind: ServerKind, dir: string, name: string, bytes: number): GuestDisk {
  if (kind === 'strata') {
    const volume: PoolVolume = { home: path.join(dir, `${name}-home`), pool: 'pool', volume: EXPORT };
    createPoolVolume(volume, bytes, 2 * bytes);
    return poolDisk(volume);
  }
  const image = path.join(dir, `${name}.raw`);
  fs.writeFileSync(image, '');
  fs.truncateSync(image, bytes);
  return {
    serve: () => startServer(kind, image, { exportName: EXPORT }),
    checkPool: () => undefined,
    remove: () => fs.rmSync(image, { force: true }),
  };
}

/** The disk of a volume that already exists (one a migration moved into another pool). */
export function poolDisk(volume: PoolVolume): GuestDisk {
  return {
    serve: () => serveVolume(volume),
    checkPool: () => checkPool(volume),
    remove: () => fs.rmSync(volume.home, { recursive: true, force: true }),
    volume,
  };
}

function checkPool(v: PoolVolume): PoolCheck {
  const r = spawnSync(process.execPath, [strataCli(), '--home', v.home, '--json', 'pool', 'check', v.pool], { encoding: 'utf8' });
  // Exit 1 with a JSON report means problems were found: the caller judges the report.
  if (r.status !== 0 && r.status !== 1) throw new Error(`strata pool check exited ${r.status}: ${r.stderr.trim()}`);
  try {
    return JSON.parse(r.stdout) as PoolCheck;
  } catch {
    throw new Error(`strata pool check printed no JSON (exit ${r.status}): ${r.stdout.trim()} ${r.stderr.trim()}`);
  }
}
