import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  cookieFields,
  DeviceLockedError,
  deviceLockers,
  describeHolder,
  fenceAndBreak,
  lockDevice,
  ownerCookie,
  RadosCluster,
  RadosDevice,
  type HeldLock,
  type Locker,
  type RadosIoctx,
} from '../blockdev/rados/index.js';
import { Pool } from '../qcowlike/index.js';
import type { BackingType, OpenedBacking } from './pool-backing.js';
import { oneLine, PoolInUseError } from './pool-errors.js';
import { processAlive, processStart } from './process-liveness.js';
import type { PoolBacking, PoolRecord, Registry } from './registry.js';

/**
 * A pool on Ceph RADOS: the pool's device is a RadosDevice in a Ceph pool,
 * opened by one owner at a time through the device's RADOS lock. The record
 * holds where (Ceph pool, config file, client name), never a key.
 */

type RadosBacking = Extract<PoolBacking, { kind: 'rados' }>;

interface Connected {
  cluster: RadosCluster;
  io: RadosIoctx;
  close: () => Promise<void>;
}

async function connect(b: RadosBacking): Promise<Connected> {
  const cluster = await RadosCluster.connect({ ...(b.conf ? { conf: b.conf } : {}), ...(b.id ? { id: b.id } : {}) });
  let io: RadosIoctx;
  try {
    io = await cluster.ioctx(b.cephPool);
  } catch (err) {
    await cluster.close();
    throw err;
  }
  return {
    cluster,
    io,
    close: async () => {
      io.close();
      await cluster.close();
    },
  };
}

function radosOf(record: PoolRecord): RadosBacking {
  if (record.backing.kind !== 'rados') throw new Error(`pool '${record.name}' is not on RADOS`);
  return record.backing;
}

/** The lock cookie of this process for this home: who owns the pool, in words a person reads. */
function myCookie(home: string): string {
  return ownerCookie({ host: os.hostname(), machine: machineId(), home: path.resolve(home), pid: process.pid, start: processStart(process.pid) ?? '-' });
}

let machine: string | undefined;

/** This machine's id (systemd's /etc/machine-id, else the boot id), the same for every home on it. */
function machineId(): string {
  if (machine !== undefined) return machine;
  for (const file of ['/etc/machine-id', '/var/lib/dbus/machine-id', '/proc/sys/kernel/random/boot_id']) {
    try {
      const id = fs.readFileSync(file, 'utf8').trim().replace(/-/g, '');
      if (id !== '') return (machine = id.slice(0, 16));
    } catch {
      // The next one.
    }
  }
  return (machine = 'unknown');
}

/** The holder is a process of this host that is gone: nothing of it can still be running. */
function deadHereHolder(l: Locker): boolean {
  const f = cookieFields(l.cookie);
  // The machine id, not the host name, says "this host": two machines may share a name.
  if (f.host !== os.hostname() || f.machine !== machineId() || f.pid === undefined) return false;
  return !processAlive(Number(f.pid), f.start === '-' ? undefined : f.start);
}

/** The holder is a running process of this host and home: a takeover refuses it (takeOverRados), so the way out is to stop it. */
function liveHereHolder(home: string, l: Locker): boolean {
  const f = cookieFields(l.cookie);
  return f.host === os.hostname() && f.home === path.resolve(home) && !deadHereHolder(l);
}

function inUse(home: string, record: PoolRecord, err: DeviceLockedError): PoolInUseError {
  if (err.holders.length > 0 && err.holders.every((h) => liveHereHolder(home, h))) {
    const pids = err.holders.map((h) => cookieFields(h.cookie).pid ?? '?').join(', ');
    return new PoolInUseError(`pool '${record.name}' is in use by another process of this home (pid ${pids}): its RADOS lock is ${err.message}`);
  }
  return new PoolInUseError(
    `pool '${record.name}' is in use: its RADOS lock is ${err.message}; if that owner is dead, take the pool over with: strata pool takeover ${record.name}`,
  );
}

/**
 * Takes the pool's lock. A holder that was a process of this host and is
 * gone (a crash, a kill) is fenced and its lock broken without asking: no
 * one can be writing through it.
 */
async function takeLock(home: string, record: PoolRecord, io: RadosIoctx, say: (m: string) => void): Promise<HeldLock> {
  const { image } = radosOf(record);
  // A RADOS lock on a missing object creates it: without this, a pool deleted
  // from another home would come back as an empty header, which reads as a
  // damaged device and keeps its name taken in the Ceph pool. (A delete
  // between this read and the lock still leaves one behind.)
  await RadosDevice.readHeader(io, image);
  try {
    return await lockDevice(io, image, myCookie(home));
  } catch (err) {
    if (!(err instanceof DeviceLockedError)) throw err;
    if (err.holders.length === 0 || !err.holders.every(deadHereHolder)) throw inUse(home, record, err);
    const fenced = await fenceAndBreak(io, image);
    say(`its last owner on this host is gone (${fenced.map(describeHolder).join('; ')}): fenced it and took the lock`);
    try {
      return await lockDevice(io, image, myCookie(home));
    } catch (again) {
      if (again instanceof DeviceLockedError) throw inUse(home, record, again);
      throw again;
    }
  }
}

/** Connects, locks and runs `fn` on the device's Ceph pool; always unlocks and disconnects. */
async function withLockedImage<T>(registry: Registry, record: PoolRecord, fn: (io: RadosIoctx) => Promise<T>): Promise<T> {
  const c = await connect(radosOf(record));
  try {
    const lock = await takeLock(registry.home, record, c.io, () => undefined);
    try {
      return await fn(c.io);
    } finally {
      await lock.release().catch(() => undefined);
    }
  } finally {
    await c.close();
  }
}

export const radosBacking: BackingType = {
  absolute: (_registry, record) => record.backing,
  describe: (b) => (b.kind === 'rados' ? `rados:${b.cephPool}/${b.image} (client.${b.id ?? 'admin'}, ${b.conf ?? 'default Ceph config'})` : ''),
  files: () => [],
  open: async (registry, record, opts, say): Promise<OpenedBacking> => {
    const b = radosOf(record);
    const c = await connect(b);
    let lock: HeldLock | undefined;
    try {
      lock = await takeLock(registry.home, record, c.io, say);
      const dev = await RadosDevice.open(c.io, b.image, {
        readOnly: opts.readOnly,
        onFenced: () => say('this host was fenced: another host took the pool over; every write to it now fails'),
      });
      const held = lock;
      return {
        dev,
        afterClose: async () => {
          await held.release().catch((err: unknown) => say(`releasing its RADOS lock: ${oneLine(err)}`));
          await c.close();
        },
      };
    } catch (err) {
      await lock?.release().catch(() => undefined);
      await c.close();
      if (err instanceof PoolInUseError) throw err;
      throw new Error(`pool '${record.name}': ${oneLine(err)}`);
    }
  },
};

export interface RadosSpec {
  cephPool: string;
  conf?: string;
  id?: string;
  size: number;
}

/** A pool on a new RADOS device named after the pool, registered once it is whole. */
export async function createRadosBacked(registry: Registry, name: string, spec: RadosSpec, clusterSize: number | undefined): Promise<PoolRecord> {
  const backing: RadosBacking = {
    kind: 'rados',
    cephPool: spec.cephPool,
    image: name,
    ...(spec.conf !== undefined ? { conf: path.resolve(spec.conf) } : {}),
    ...(spec.id !== undefined ? { id: spec.id } : {}),
  };
  const record: PoolRecord = { name, backing, created: new Date().toISOString() };
  const c = await connect(backing).catch((err: unknown) => {
    throw new Error(`cannot create pool '${name}': ${oneLine(err)}`);
  });
  try {
    if (await RadosDevice.exists(c.io, name)) {
      // The hint is a command that works as typed: with the config and client this create was given.
      const how = [`strata pool import ${name} --rados ${spec.cephPool}`, ...(spec.conf !== undefined ? [`--ceph-conf ${spec.conf}`] : []), ...(spec.id !== undefined ? [`--id ${spec.id}`] : [])].join(' ');
      throw new Error(`cannot create pool '${name}': Ceph pool '${spec.cephPool}' already holds a Strata pool named '${name}' (to use it from this home: ${how})`);
    }
    const dev = await RadosDevice.create(c.io, name, spec.size);
    let made = true;
    try {
      const lock = await lockDevice(c.io, name, myCookie(registry.home));
      try {
        const created = await Pool.create(dev, clusterSize === undefined ? {} : { clusterSize });
        await created.close();
      } finally {
        await lock.release();
      }
      registry.add(record);
      made = false;
    } finally {
      if (made) await RadosDevice.destroy(c.io, name).catch(() => undefined);
    }
  } catch (err) {
    if (err instanceof Error && err.message.startsWith('cannot create pool')) throw err;
    throw new Error(`cannot create pool '${name}': ${oneLine(err)}`);
  } finally {
    await c.close();
  }
  return record;
}

/** The registration of a pool another home made in a Ceph pool (a second host taking part). */
export function radosRecord(name: string, spec: Omit<RadosSpec, 'size'>): PoolRecord {
  return {
    name,
    backing: {
      kind: 'rados',
      cephPool: spec.cephPool,
      image: name,
      ...(spec.conf !== undefined ? { conf: path.resolve(spec.conf) } : {}),
      ...(spec.id !== undefined ? { id: spec.id } : {}),
    },
    created: new Date().toISOString(),
  };
}

/** Whether the record's device has its header in RADOS (read without the lock: the header is never rewritten in place but by grow). */
export async function radosImageExists(record: PoolRecord): Promise<boolean> {
  const c = await connect(radosOf(record));
  try {
    return await RadosDevice.exists(c.io, radosOf(record).image);
  } finally {
    await c.close();
  }
}

/** Removes the pool's objects from RADOS, holding its lock so no other owner is writing meanwhile. */
export async function destroyRadosBacked(registry: Registry, record: PoolRecord): Promise<void> {
  const { image } = radosOf(record);
  await withLockedImage(registry, record, (io) => RadosDevice.destroy(io, image));
}

export interface Takeover {
  /** The owners fenced, as their locks named them; empty when the pool was not held. */
  fenced: string[];
}

/**
 * `strata pool takeover`: fences whoever holds the pool's lock and breaks it,
 * so this host can open the pool. A live server of this same home is never
 * fenced: it is stopped instead.
 */
export async function takeOverRados(registry: Registry, record: PoolRecord): Promise<Takeover> {
  const { image } = radosOf(record);
  const c = await connect(radosOf(record));
  try {
    const holders = await deviceLockers(c.io, image);
    const home = path.resolve(registry.home);
    for (const h of holders) {
      const f = cookieFields(h.cookie);
      if (liveHereHolder(home, h)) {
        throw new Error(`pool '${record.name}' is held by this home's own process ${f.pid ?? '?'} (${describeHolder(h)}): stop it instead of taking the pool over`);
      }
    }
    const fenced = holders.length === 0 ? [] : await fenceAndBreak(c.io, image);
    return { fenced: fenced.map(describeHolder) };
  } finally {
    await c.close();
  }
}
