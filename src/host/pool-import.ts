import fs from 'node:fs';
import path from 'node:path';
import { examineMemberFile, findArrays, type FoundArray } from './member-scan.js';
import { poolHealth, type PoolHealth } from './pool-health.js';
import type { PoolStats } from '../qcowlike/index.js';
import { oneLine, PoolInUseError, withPool } from './open-pool.js';
import { backingType } from './pool-backing.js';
import { radosImageExists, radosRecord, type RadosSpec } from './rados-backing.js';
import { RAID_LEVELS, Registry, type PoolRecord, type RaidLevel } from './registry.js';

/**
 * Bringing back a pool whose registration is lost, as `zpool import` does:
 * the pool's own headers say what it is, the registry only where it lives.
 * A registration is written first and kept only once the pool opens from it,
 * so a file that is not a pool never stays registered.
 */

function same(a: string, b: string): boolean {
  const real = (p: string): string => {
    try {
      return fs.realpathSync(p);
    } catch {
      return path.resolve(p);
    }
  };
  return real(a) === real(b);
}

/** The registered pool that already uses one of these files, if any. */
export function registeredOwner(registry: Registry, files: string[]): string | undefined {
  for (const record of registry.readable()) {
    const used = backingType(record.backing).files(registry, record);
    if (used.some((u) => files.some((f) => same(u, f)))) return record.name;
  }
  return undefined;
}

async function registerAndOpen(registry: Registry, record: PoolRecord, notPool: (why: string) => string): Promise<PoolStats & PoolHealth> {
  registry.add(record);
  try {
    return await withPool(registry.home, record.name, { readOnly: true }, async ({ pool }) => ({ ...pool.stats(), ...poolHealth(pool) }));
  } catch (err) {
    registry.remove(record.name);
    throw new Error(notPool(oneLine(err).replace(`pool '${record.name}': `, '')));
  }
}

export async function importFilePool(registry: Registry, name: string, fileArg: string): Promise<{ record: PoolRecord; stats: PoolStats & PoolHealth }> {
  const file = path.resolve(fileArg);
  if (!fs.existsSync(file)) throw new Error(`cannot import ${file}: no such file`);
  if (registry.has(name)) throw new Error(`pool '${name}' already exists in ${registry.home}`);
  const owner = registeredOwner(registry, [file]);
  if (owner !== undefined) throw new Error(`cannot import ${file}: it is already registered as pool '${owner}'`);
  const member = await examineMemberFile(file).catch(() => undefined);
  if (member && member.state !== 'released') throw new Error(`cannot import ${file} as a file pool: it is a member of RAID ${member.level} array ${member.arrayUuid}${member.name ? ` (${member.name})` : ''}; import the array it belongs to (from its members) instead`);
  const record: PoolRecord = { name, backing: { kind: 'file', path: file }, created: new Date().toISOString() };
  const stats = await registerAndOpen(registry, record, (why) => `cannot import ${file}: ${why}`);
  return { record, stats };
}

/** The arrays among `files`, each with the pool already registered on it, if one is. */
export async function scanArrays(registry: Registry, files: string[]): Promise<Array<FoundArray & { registeredAs: string | null }>> {
  const arrays = await findArrays(files);
  return arrays.map((a) => ({ ...a, registeredAs: registeredOwner(registry, a.found.map((m) => m.path)) ?? null }));
}

export async function importRaidPool(registry: Registry, name: string, files: string[], uuid: string | undefined): Promise<{ record: PoolRecord; stats: PoolStats & PoolHealth; array: FoundArray }> {
  if (registry.has(name)) throw new Error(`pool '${name}' already exists in ${registry.home}`);
  const all = await scanArrays(registry, files);
  const candidates = uuid === undefined ? all.filter((a) => a.registeredAs === null) : all.filter((a) => a.uuid === uuid);
  if (candidates.length === 0) {
    if (uuid !== undefined) throw new Error(`no member of array ${uuid} among the ${files.length} file(s) given`);
    if (all.length > 0) throw new Error(`every array found is already registered (${all.map((a) => `${a.uuid} as pool '${a.registeredAs}'`).join(', ')})`);
    throw new Error(`no Strata RAID member among the ${files.length} file(s) given`);
  }
  if (candidates.length > 1) throw new Error(`${candidates.length} arrays found (${candidates.map((a) => a.uuid).join(', ')}); name the one to import by its UUID`);
  const array = candidates[0]!;
  if (array.registeredAs !== null) throw new Error(`array ${array.uuid} is already registered as pool '${array.registeredAs}'`);
  const level = String(array.level) as RaidLevel;
  if (!RAID_LEVELS.includes(level)) throw new Error(`array ${array.uuid} has unknown RAID level ${array.level}`);
  // Stale members stay out of the registration: assembly would only refuse them at every open.
  const members = array.found.filter((m) => m.state !== 'stale').map((m) => m.path);
  const record: PoolRecord = { name, backing: { kind: 'raid', level, members, chunk: array.chunk }, created: new Date().toISOString() };
  const stats = await registerAndOpen(registry, record, (why) => `cannot import array ${array.uuid}: ${why}`);
  return { record, stats, array };
}

/**
 * Registers a pool that another home made on RADOS (this host taking part).
 * The device's header must be there; a pool another host holds right now is
 * registered all the same, and opens here once it is released or taken over.
 */
export async function importRadosPool(registry: Registry, name: string, spec: Omit<RadosSpec, 'size'>): Promise<{ record: PoolRecord; stats: (PoolStats & PoolHealth) | undefined; heldBy: string | undefined }> {
  if (registry.has(name)) throw new Error(`pool '${name}' already exists in ${registry.home}`);
  const record = radosRecord(name, spec);
  if (!(await radosImageExists(record))) throw new Error(`cannot import pool '${name}': Ceph pool '${spec.cephPool}' holds no Strata pool named '${name}'`);
  registry.add(record);
  try {
    const stats = await withPool(registry.home, name, { readOnly: true }, async ({ pool }) => ({ ...pool.stats(), ...poolHealth(pool) }));
    return { record, stats, heldBy: undefined };
  } catch (err) {
    if (err instanceof PoolInUseError) return { record, stats: undefined, heldBy: oneLine(err) };
    registry.remove(name);
    throw new Error(`cannot import pool '${name}': ${oneLine(err).replace(`pool '${name}': `, '')}`);
  }
}
