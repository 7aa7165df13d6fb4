import fs from 'node:fs';
import path from 'node:path';
import { sysfsBlockDir } from '../blockdev/sysfs.js';
import { DATA_OFFSET, examineMemberHeader, type MemberExamination } from '../raid/index.js';

/** One file's RAID header, read without locking it: examine works on the members of a served array too. */
export async function examineMemberFile(file: string): Promise<MemberExamination | undefined> {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw new Error(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() && !st.isBlockDevice()) throw new Error(`${file} is not a file or block device`);
    const size = st.isFile() ? st.size : deviceSize(st);
    const header = Buffer.alloc(DATA_OFFSET);
    if (size < DATA_OFFSET) return undefined;
    fs.readSync(fd, header, 0, DATA_OFFSET, 0);
    return await examineMemberHeader(header, size);
  } finally {
    fs.closeSync(fd);
  }
}

/** A block device's size from sysfs (fstat reports 0 and Node has no BLKGETSIZE64). */
function deviceSize(st: fs.Stats): number {
  return Number(fs.readFileSync(`${sysfsBlockDir(st.rdev)}/size`, 'utf8').trim()) * 512;
}

export interface FoundMember {
  path: string;
  role: number | 'spare';
  /** As the array's freshest superblock records this device ('stale' when it no longer lists it as in use). */
  state: string;
  events: number;
}

/** An array some of the scanned files belong to, as `mdadm --examine --scan` groups them. */
export interface FoundArray {
  uuid: string;
  name: string;
  level: number;
  chunk: number;
  size: number;
  /** Roles the array has. */
  members: number;
  /** Event count of the freshest member found. */
  events: number;
  found: FoundMember[];
  /** Data roles with a current member among the files found. */
  present: number;
}

/** The files in DIR (not recursive) that could be members: regular files and block devices, sorted. */
export function filesIn(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    throw new Error(`cannot scan ${dir}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (err as Error).message}`);
  }
  return names
    .map((n) => path.join(path.resolve(dir), n))
    .filter((f) => {
      try {
        const st = fs.statSync(f);
        return st.isFile() || st.isBlockDevice();
      } catch {
        return false;
      }
    })
    .sort();
}

/**
 * Groups files by the array UUID in their superblocks. A member whose
 * superblock was released, or that is not a Strata RAID member at all, is
 * left out; a member the freshest superblock no longer lists is 'stale'.
 */
export async function findArrays(files: string[]): Promise<FoundArray[]> {
  const byUuid = new Map<string, Array<{ path: string; ex: MemberExamination }>>();
  for (const file of files) {
    let ex: MemberExamination | undefined;
    try {
      ex = await examineMemberFile(file);
    } catch {
      continue;
    }
    if (!ex || ex.state === 'released' || ex.problem !== undefined) continue;
    const group = byUuid.get(ex.arrayUuid) ?? [];
    group.push({ path: file, ex });
    byUuid.set(ex.arrayUuid, group);
  }
  const arrays: FoundArray[] = [];
  for (const [uuid, group] of byUuid) {
    const fresh = group.reduce((a, b) => (b.ex.events > a.ex.events ? b : a)).ex;
    const found = group.map(({ path: p, ex }): FoundMember => {
      const at = fresh.table.findIndex((e) => e.device === ex.deviceUuid);
      const entry = at >= 0 ? fresh.table[at]! : undefined;
      const inUse = entry !== undefined && (entry.state === 'active' || entry.state === 'rebuilding' || entry.state === 'spare');
      return { path: p, role: at >= 0 && at < fresh.members ? at : 'spare', state: inUse ? entry.state : 'stale', events: ex.events };
    });
    const roles = new Set(found.filter((m) => m.role !== 'spare' && m.state === 'active').map((m) => m.role));
    arrays.push({ uuid, name: fresh.name, level: fresh.level, chunk: fresh.chunk, size: fresh.arraySize, members: fresh.members, events: fresh.events, found, present: roles.size });
  }
  return arrays.sort((a, b) => a.name.localeCompare(b.name) || a.uuid.localeCompare(b.uuid));
}
