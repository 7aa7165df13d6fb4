import crypto from 'node:crypto';
import { RADOS_ERR } from './errno.js';
import { RadosError } from './rados-cluster.js';
import type { Locker, RadosIoctx } from './rados-ioctx.js';
import { headerObject } from './rados-device.js';

/**
 * One owner at a time for a device on RADOS, as RBD's exclusive lock: a RADOS
 * exclusive lock on the device's header object, whose cookie names the owner
 * (host, home, process). A new owner takes a dead one's place only by
 * fencing it first — its client is blocklisted, so the OSDs refuse anything
 * it still sends — and then breaking its lock.
 */

const LOCK_NAME = 'strata';
/** How long a fenced client stays refused: long past any pause a stale owner could wake from. */
const FENCE_SECONDS = 30 * 24 * 3600;

export class DeviceLockedError extends Error {
  constructor(
    readonly holders: Locker[],
    message: string,
  ) {
    super(message);
  }
}

export interface HeldLock {
  cookie: string;
  release(): Promise<void>;
}

/** The owner fields a cookie carries, `key=value` separated by spaces, then a random tag. */
export function ownerCookie(owner: Record<string, string | number>): string {
  const fields = Object.entries(owner).map(([k, v]) => `${k}=${String(v).replace(/\s/g, '_')}`);
  return `${fields.join(' ')} tag=${crypto.randomBytes(4).toString('hex')}`;
}

export function cookieFields(cookie: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of cookie.split(' ')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

export function describeHolder(l: Locker): string {
  return `${l.cookie} (${l.client} at ${l.address})`;
}

/** Takes the device's lock for `cookie`; refuses with who holds it. */
export async function lockDevice(io: RadosIoctx, name: string, cookie: string): Promise<HeldLock> {
  const oid = headerObject(name);
  const ret = await io.lockExclusive(oid, LOCK_NAME, cookie, 'strata pool owner');
  if (ret === RADOS_ERR.EBUSY || ret === RADOS_ERR.EEXIST) {
    const holders = await io.lockers(oid, LOCK_NAME);
    const who = holders.length > 0 ? holders.map(describeHolder).join('; ') : 'another client';
    throw new DeviceLockedError(holders, `held by ${who}`);
  }
  if (ret < 0) throw new RadosError(ret, `locking ${io.pool}/${oid}`);
  let released = false;
  return {
    cookie,
    release: async () => {
      if (released) return;
      released = true;
      const r = await io.unlock(oid, LOCK_NAME, cookie);
      // Gone already: broken by a takeover, or the device was destroyed.
      if (r < 0 && r !== RADOS_ERR.ENOENT) throw new RadosError(r, `unlocking ${io.pool}/${oid}`);
    },
  };
}

export function deviceLockers(io: RadosIoctx, name: string): Promise<Locker[]> {
  return io.lockers(headerObject(name), LOCK_NAME);
}

/**
 * Fences every holder of the device's lock and breaks the lock: each
 * holder's client is blocklisted (and this client waits for the OSD map that
 * says so) before its lock goes, so nothing it sends afterwards lands.
 */
export async function fenceAndBreak(io: RadosIoctx, name: string): Promise<Locker[]> {
  const holders = await deviceLockers(io, name);
  for (const h of holders) {
    if (h.address === '') throw new Error(`cannot fence ${h.client}: the lock does not say its address`);
    await io.cluster.blocklist(h.address, FENCE_SECONDS);
    const ret = await io.breakLock(headerObject(name), LOCK_NAME, h);
    if (ret < 0 && ret !== RADOS_ERR.ENOENT) throw new RadosError(ret, `breaking the lock of ${h.client}`);
  }
  return holders;
}
