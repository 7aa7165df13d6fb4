import fs from 'node:fs';
import path from 'node:path';
import { FileDevice } from '../blockdev/index.js';
import { DATA_OFFSET, type RaidArray } from '../raid/index.js';
import type { Registry } from './registry.js';

/**
 * A new member: opened if the file exists, else created (sparse) at the size
 * the array's members have. `direct` as the array's other members were opened.
 */
export function newMember(file: string, like: RaidArray, direct = false): FileDevice {
  if (fs.existsSync(file)) return FileDevice.open(file, { direct });
  const g = like.geometry;
  return FileDevice.create(file, { size: DATA_OFFSET + g.rows * g.chunk, direct });
}

/**
 * A member named on the command line of a pool's array: a role number or a
 * device UUID (hex, no file of that name here) as given, a file as an
 * absolute path (the registry opens members by absolute path, and those are
 * the names the array knows them by).
 */
export function memberArg(member: string): string {
  if (/^\d+$/.test(member)) return member;
  if (/^[0-9a-fA-F-]{8,36}$/.test(member) && !fs.existsSync(member)) return member;
  return path.resolve(member);
}

/**
 * Records in the registry the files the array now consists of (every role
 * that has a device, then the spares), so that the next open assembles the
 * set that add, replace, remove or a spare taking over left behind.
 * Returns whether the record changed.
 */
export function recordMembers(registry: Registry, poolName: string, array: RaidArray): boolean {
  const record = registry.get(poolName);
  if (record.backing.kind !== 'raid') throw new Error(`pool '${poolName}' is not on a RAID array`);
  const st = array.status();
  // A role without a device shows as '(missing)'; every device the registry opened or the commands added is an absolute path.
  const members = [...st.members, ...st.spares].filter((m) => m.state !== 'missing' && path.isAbsolute(m.device)).map((m) => m.device);
  const before = registry.memberPaths(record);
  if (members.length === before.length && members.every((m, i) => m === before[i])) return false;
  registry.replace({ ...record, backing: { ...record.backing, members } });
  return true;
}
