import { BlockDeviceError, FileDevice, type BlockDevice } from '../blockdev/index.js';
import { RaidArray, type MemberSlot, type RaidArrayOptions } from './array.js';
import type { MemberSpec } from './create.js';
import { levelDescriptor, MirrorLayout, ParityLayout } from './levels/index.js';
import { BITMAP_MAX_BYTES, BITMAP_OFFSET, DATA_OFFSET, initChecksum, newestSuperblock, SPARE_ROLE, superblockProblem, type Superblock } from './superblock.js';
import { RaidError } from './errors.js';

export interface AssembleOptions extends RaidArrayOptions {
  /** Assemble only the array with this UUID; otherwise the one most of the given members belong to. */
  uuid?: string;
  /** After an unclean shutdown, resync the regions the write-intent bitmap marks (default true). */
  resync?: boolean;
  /** Open members given by path with O_DIRECT (see FileOpenOptions.direct). */
  direct?: boolean;
}

export interface AssembleResult {
  array: RaidArray;
  /** Members refused (foreign, stale, unreadable), roles missing, and what resync did. */
  warnings: string[];
}

interface Candidate {
  dev: BlockDevice;
  sb: Superblock;
  bitmap: Uint8Array;
}

/**
 * Assembles an array from its members in any order, as mdadm --assemble does:
 * the member with the highest event count holds the truth about which device
 * fills which role; members of another array are refused, members the
 * freshest superblock no longer lists as in sync are reported stale and left
 * out, and the array starts degraded (with a warning) when its level survives
 * the roles that are missing, or not at all.
 */
export async function assembleArray(members: MemberSpec[], opts: AssembleOptions = {}): Promise<AssembleResult> {
  await initChecksum();
  const warnings: string[] = [];
  const candidates: Candidate[] = [];
  const opened: BlockDevice[] = [];
  const closeAll = async (devs: BlockDevice[]): Promise<void> => {
    // Devices the caller handed in stay the caller's to close.
    for (const d of devs) if (!members.includes(d)) await d.close().catch(() => undefined);
  };
  for (const spec of members) {
    let dev: BlockDevice;
    try {
      dev = typeof spec === 'string' ? FileDevice.open(spec, { readOnly: opts.readOnly ?? false, direct: opts.direct ?? false }) : spec;
    } catch (err) {
      if (err instanceof BlockDeviceError && err.code === 'EBUSY') {
        // Another process (a server) has the array open: assembling beside it would fork the array.
        await closeAll(opened);
        throw new BlockDeviceError('EBUSY', String(spec), 'open', 'member is locked: the array is in use by another process');
      }
      warnings.push(`${spec}: cannot open (${err instanceof Error ? err.message : String(err)}); treated as missing`);
      continue;
    }
    opened.push(dev);
    try {
      if (dev.size < DATA_OFFSET) throw new RaidError('ENOSPC', 'too small to be a member');
      const header = Buffer.alloc(DATA_OFFSET);
      await dev.read(header, 0);
      const sb = newestSuperblock(header);
      if (!sb) {
        warnings.push(`${dev.name}: not a Strata RAID member (no valid superblock); refused`);
        continue;
      }
      const problem = superblockProblem(sb, dev.size);
      if (problem) {
        warnings.push(`${dev.name}: superblock of array ${sb.arrayUuid} is not usable (${problem}); refused`);
        continue;
      }
      candidates.push({ dev, sb, bitmap: header.subarray(BITMAP_OFFSET, BITMAP_OFFSET + BITMAP_MAX_BYTES) });
    } catch (err) {
      warnings.push(`${dev.name}: cannot read its superblock (${err instanceof Error ? err.message : String(err)}); refused`);
    }
  }

  const uuid = opts.uuid ?? chooseArray(candidates);
  if (!uuid) {
    await closeAll(opened);
    throw new RaidError('ENOENT', `no Strata RAID member among ${members.length} given device(s)${warnings.length ? `: ${warnings.join('; ')}` : ''}`);
  }
  const ours = candidates.filter((c) => c.sb.arrayUuid === uuid);
  const used = new Set<BlockDevice>();
  for (const c of candidates) {
    if (c.sb.arrayUuid !== uuid) warnings.push(`${c.dev.name}: belongs to another array (${c.sb.arrayUuid}${c.sb.name ? `, ${c.sb.name}` : ''}); refused`);
  }
  if (ours.length === 0) {
    await closeAll(opened);
    throw new RaidError('ENOENT', `none of the given devices belongs to array ${uuid}`);
  }
  const fresh = ours.reduce((a, b) => (b.sb.events > a.sb.events ? b : a)).sb;
  const n = fresh.members;
  const slots: MemberSlot[] = [];
  for (let role = 0; role < n; role++) {
    const e = fresh.table[role]!;
    slots.push({ dev: undefined, device: e.device, state: e.state === 'rebuilding' ? 'rebuilding' : e.state === 'active' ? 'active' : 'missing', rebuiltRows: e.rebuiltRows });
  }
  const spares: MemberSlot[] = [];
  const bitmap = new Uint8Array(BITMAP_MAX_BYTES);
  for (const c of ours) {
    const role = fresh.table.findIndex((e) => e.device === c.sb.deviceUuid);
    const entry = role >= 0 ? fresh.table[role]! : undefined;
    if (role >= 0 && role < n && (entry!.state === 'active' || entry!.state === 'rebuilding')) {
      if (slots[role]!.dev) {
        warnings.push(`${c.dev.name}: duplicate of member ${role} (${slots[role]!.dev!.name}); refused`);
        continue;
      }
      slots[role]!.dev = c.dev;
      used.add(c.dev);
      for (let i = 0; i < bitmap.length; i++) bitmap[i]! |= c.bitmap[i]!;
    } else if (role >= n && entry!.state === 'spare') {
      spares.push({ dev: c.dev, device: c.sb.deviceUuid, state: 'spare', rebuiltRows: 0 });
      used.add(c.dev);
    } else {
      const why = entry ? `marked ${entry.state}` : c.sb.role === SPARE_ROLE ? 'a spare no longer listed' : 'no longer listed';
      warnings.push(`${c.dev.name}: stale member (events ${c.sb.events}, array at ${fresh.events}; ${why}); not used — add it back to rebuild it`);
    }
  }
  for (const [role, s] of slots.entries()) {
    if (!s.dev) {
      if (s.state !== 'missing') warnings.push(`member ${role} (device ${s.device.slice(0, 8)}) is missing`);
      s.state = 'missing';
    }
  }
  await closeAll(opened.filter((d) => !used.has(d)));

  const level = levelDescriptor(fresh.level);
  const failed = slots.map((s) => s.state !== 'active');
  const survives = level.kind === 'mirror' ? new MirrorLayout(n, fresh.copies, fresh.chunk, fresh.rows).survives(failed) : new ParityLayout(n, level.parity as 1 | 2, fresh.chunk, fresh.rows).survives(failed);
  if (!survives) {
    await closeAll([...used]);
    const down = failed.filter(Boolean).length;
    throw new RaidError('EDEGRADED', `cannot assemble RAID ${fresh.level} array ${fresh.name || uuid}: ${down} of ${n} members are missing, stale or not yet rebuilt, more than it survives${warnings.length ? ` (${warnings.join('; ')})` : ''}`);
  }
  if (failed.some(Boolean)) warnings.push(`array is degraded: ${failed.filter(Boolean).length} of ${n} members unavailable`);

  const array = new RaidArray(
    { uuid, name: fresh.name, level: fresh.level, copies: fresh.copies, members: n, chunk: fresh.chunk, rows: fresh.rows, size: fresh.arraySize, regionRows: fresh.bitmapRegion / fresh.chunk, createdMs: fresh.createdMs },
    slots,
    spares,
    fresh.events,
    bitmap,
    opts,
  );
  const dirty = array.dirtyRegions().length;
  if (!fresh.clean && !opts.readOnly && (opts.resync ?? true) && dirty > 0) {
    const r = await array.resyncDirty();
    warnings.push(`array was not shut down cleanly: resynced ${r.regions} dirty region(s), ${r.mismatches} inconsistent stripe(s) or chunk(s) fixed`);
    if (failed.some(Boolean)) warnings.push('resync ran degraded: stripes with a member missing could not be checked, and their parity may not match data written just before the crash');
  }
  await array.markInUse();
  return { array, warnings };
}

/** The array most candidates belong to; ties go to the one with the freshest member. */
function chooseArray(cands: Candidate[]): string | undefined {
  const count = new Map<string, { n: number; events: number }>();
  for (const c of cands) {
    const e = count.get(c.sb.arrayUuid) ?? { n: 0, events: 0 };
    e.n++;
    e.events = Math.max(e.events, c.sb.events);
    count.set(c.sb.arrayUuid, e);
  }
  let best: string | undefined;
  let bestScore: { n: number; events: number } | undefined;
  for (const [uuid, s] of count) {
    if (!bestScore || s.n > bestScore.n || (s.n === bestScore.n && s.events > bestScore.events)) {
      best = uuid;
      bestScore = s;
    }
  }
  return best;
}
