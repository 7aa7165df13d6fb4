import fs from 'node:fs';
import { FileDevice, type BlockDevice } from '../blockdev/index.js';
import { RaidArray, type MemberSlot, type RaidArrayOptions } from './array.js';
import { levelDescriptor, type RaidLevel } from './levels/index.js';
import { MemberInUseError, MemberTooSmallError } from './create-errors.js';
import { BITMAP_MAX_BYTES, DATA_OFFSET, initChecksum, MAX_ENTRIES, newestSuperblock, newUuid } from './superblock.js';
import { RaidError } from './errors.js';

export const DEFAULT_CHUNK = 512 * 1024;
/** md's default bitmap chunk for large arrays: one bitmap write per 64 MiB of member made dirty. */
export const DEFAULT_REGION = 64 * 1024 * 1024;

/** A member given as a path (opened, or created at the size the array needs) or as an open device. */
export type MemberSpec = string | BlockDevice;

export interface CreateArrayOptions extends RaidArrayOptions {
  level: RaidLevel;
  members: MemberSpec[];
  spares?: MemberSpec[];
  /** Chunk size in bytes, a power of two from 4 KiB; 512 KiB if absent. */
  chunk?: number;
  /**
   * Array size in bytes. If absent, the largest the members hold: the smallest
   * existing member, less its superblock and bitmap, sizes every member (as
   * mdadm does), and member files that do not exist are created at that size.
   */
  size?: number;
  /** RAID 10: copies of each chunk (default 2). */
  copies?: number;
  name?: string;
  /** Member bytes per write-intent bit; a multiple of chunk, 64 MiB if absent. */
  bitmapRegion?: number;
  /** Take members that already carry a Strata RAID superblock. */
  force?: boolean;
}

/** Bytes of member data each member needs for an array of `size` bytes. */
export function memberDataNeeded(level: RaidLevel, members: number, chunk: number, size: number, copies = 2): number {
  const d = levelDescriptor(level);
  const chunks = Math.ceil(size / chunk);
  const rows = d.kind === 'parity' ? Math.ceil(chunks / (members - d.parity)) : Math.ceil((chunks * d.copies(members, copies)) / members);
  return rows * chunk;
}

function validate(opts: CreateArrayOptions): { chunk: number; copies: number } {
  const level = levelDescriptor(opts.level);
  const n = opts.members.length;
  if (n < level.minMembers) throw new RaidError('EINVAL', `RAID ${opts.level} needs at least ${level.minMembers} members, got ${n}`);
  if (n + (opts.spares?.length ?? 0) > MAX_ENTRIES) throw new RaidError('EINVAL', `too many members and spares (at most ${MAX_ENTRIES})`);
  const chunk = opts.chunk ?? DEFAULT_CHUNK;
  if (!Number.isInteger(chunk) || chunk < 4096 || (chunk & (chunk - 1)) !== 0 || chunk > 64 * 1024 * 1024) {
    throw new RaidError('EINVAL', `invalid chunk size ${chunk} (a power of two from 4K to 64M)`);
  }
  const copies = level.copies(n, opts.copies ?? 2);
  if (opts.level === 10 && (copies < 2 || copies > n)) throw new RaidError('EINVAL', `RAID 10 copies must be from 2 to the member count (${n}), got ${copies}`);
  if (opts.level !== 10 && opts.copies !== undefined && opts.level !== 1) throw new RaidError('EINVAL', `a copy count applies to RAID 10 only`);
  const paths = opts.members.filter((m): m is string => typeof m === 'string');
  const dup = paths.find((p, i) => paths.indexOf(p) !== i);
  if (dup) throw new RaidError('EEXIST', `member ${dup} is given twice`);
  return { chunk, copies };
}

async function openMember(spec: MemberSpec, force: boolean, opened: BlockDevice[]): Promise<BlockDevice | string> {
  let dev: BlockDevice;
  if (typeof spec !== 'string') dev = spec;
  else if (fs.existsSync(spec)) dev = FileDevice.open(spec);
  else return spec;
  opened.push(dev);
  if (!force && dev.size >= DATA_OFFSET) {
    const header = Buffer.alloc(2 * 4096);
    await dev.read(header, 0);
    const sb = newestSuperblock(header);
    if (sb) throw new MemberInUseError(dev.name, sb.level, sb.arrayUuid, sb.name);
  }
  return dev;
}

/**
 * Creates an array: writes a zeroed header and a superblock on every member and
 * spare, and zeroes the data areas (thin members punch, so this is cheap) so
 * parity and mirrors agree from the start without an initial resync.
 */
export async function createArray(opts: CreateArrayOptions): Promise<RaidArray> {
  await initChecksum();
  const { chunk, copies } = validate(opts);
  const level = levelDescriptor(opts.level);
  const n = opts.members.length;
  const wantData = opts.size !== undefined ? memberDataNeeded(opts.level, n, chunk, opts.size, copies) : 0;
  const opened: BlockDevice[] = [];
  try {
    // Existing members are opened (and checked for a superblock) before any missing one is created.
    const found: (BlockDevice | string)[] = [];
    for (const m of [...opts.members, ...(opts.spares ?? [])]) found.push(await openMember(m, opts.force ?? false, opened));
    const existing = found.filter((d): d is BlockDevice => typeof d !== 'string');
    const smallestExisting = existing.length > 0 ? Math.min(...existing.map((d) => d.size)) : 0;
    const newSize = wantData > 0 ? DATA_OFFSET + wantData : smallestExisting;
    const devices = found.map((d) => {
      if (typeof d !== 'string') return d;
      if (newSize <= DATA_OFFSET) throw new Error(`member ${d} does not exist, and no array size or existing member says how large to make it`);
      const dev = FileDevice.create(d, { size: newSize });
      opened.push(dev);
      return dev;
    });
    const members = devices.slice(0, n);
    const spares = devices.slice(n);
    const smallest = Math.min(...devices.map((d) => d.size));
    const capacityOf = (r: number): number => (level.kind === 'parity' ? r * (n - level.parity) * chunk : Math.floor((r * n) / copies) * chunk);
    const fitRows = Math.max(0, Math.floor((smallest - DATA_OFFSET) / chunk));
    const rows = wantData > 0 ? wantData / chunk : fitRows;
    if (rows < 1 || smallest < DATA_OFFSET + rows * chunk) {
      const needed = DATA_OFFSET + Math.max(1, rows) * chunk;
      const small = devices.find((d) => d.size < needed)!;
      throw new MemberTooSmallError(small.name, small.size, needed, capacityOf(fitRows), opts.size);
    }
    const capacity = capacityOf(rows);
    const size = opts.size ?? capacity;
    if (size <= 0 || size > capacity) throw new RaidError('ENOSPC', `array size ${size} does not fit: the members hold ${capacity} bytes at RAID ${opts.level}`);
    let regionRows = Math.max(1, Math.ceil((opts.bitmapRegion ?? DEFAULT_REGION) / chunk));
    if (opts.bitmapRegion !== undefined && opts.bitmapRegion % chunk !== 0) throw new RaidError('EINVAL', `bitmap region ${opts.bitmapRegion} must be a multiple of the chunk size ${chunk}`);
    while (Math.ceil(rows / regionRows) > BITMAP_MAX_BYTES * 8) regionRows *= 2;
    for (const dev of [...members, ...spares]) {
      await dev.writeZeroes(0, DATA_OFFSET);
      await dev.writeZeroes(DATA_OFFSET, rows * chunk, { mayUnmap: true });
    }
    const slots: MemberSlot[] = members.map((dev) => ({ dev, device: newUuid(), state: 'active', rebuiltRows: 0 }));
    const spareSlots: MemberSlot[] = spares.map((dev) => ({ dev, device: newUuid(), state: 'spare', rebuiltRows: 0 }));
    const array = new RaidArray(
      { uuid: newUuid(), name: opts.name ?? '', level: opts.level, copies, members: n, chunk, rows, size, regionRows, createdMs: Date.now() },
      slots,
      spareSlots,
      0,
      undefined,
      opts,
    );
    await array.markInUse();
    return array;
  } catch (err) {
    for (const d of opened) if (!opts.members.includes(d) && !(opts.spares ?? []).includes(d)) await d.close().catch(() => undefined);
    throw err;
  }
}
