import { BITMAP_MAX_BYTES, BITMAP_OFFSET, DATA_OFFSET, initChecksum, newestSuperblock, RELEASED_MAGIC, SPARE_ROLE, superblockProblem, type MemberState, type RoleEntry } from './superblock.js';
import type { RaidLevel } from './levels/index.js';

/** What one member's header says about it and its array, as `mdadm --examine` prints. */
export interface MemberExamination {
  arrayUuid: string;
  deviceUuid: string;
  name: string;
  level: RaidLevel;
  copies: number;
  chunk: number;
  /** Roles in the array (data members, not spares). */
  members: number;
  role: number | 'spare';
  /**
   * This device's state as its own superblock records it; 'released' when a
   * remove or replace let it go (it is no longer a member of anything).
   */
  state: MemberState | 'released' | 'unlisted';
  events: number;
  /** The array was closed cleanly when this superblock was written. */
  clean: boolean;
  arraySize: number;
  /** Bytes of array data this member holds, from DATA_OFFSET. */
  memberDataSize: number;
  dataOffset: number;
  bitmap: { regionBytes: number; regions: number; dirtyRegions: number };
  created: string;
  /** Every role and spare as this superblock last saw them. */
  table: RoleEntry[];
  /** Why assembly would refuse this superblock, if it would. */
  problem?: string;
}

/** Reads a member header (the first DATA_OFFSET bytes); undefined when it holds no Strata RAID superblock at all. */
export async function examineMemberHeader(header: Buffer, deviceSize: number): Promise<MemberExamination | undefined> {
  await initChecksum();
  const active = newestSuperblock(header);
  const released = active ? undefined : newestSuperblock(header, RELEASED_MAGIC);
  const sb = active ?? released;
  if (!sb) return undefined;
  const entry = sb.table.find((e) => e.device === sb.deviceUuid);
  const regionRows = Math.max(1, Math.floor(sb.bitmapRegion / Math.max(1, sb.chunk)));
  const regions = Math.min(BITMAP_MAX_BYTES * 8, Math.ceil(sb.rows / regionRows));
  let dirty = 0;
  for (let i = 0; i < regions; i++) if ((header[BITMAP_OFFSET + (i >> 3)]! >> (i & 7)) & 1) dirty++;
  const problem = superblockProblem(sb, deviceSize);
  return {
    arrayUuid: sb.arrayUuid,
    deviceUuid: sb.deviceUuid,
    name: sb.name,
    level: sb.level,
    copies: sb.copies,
    chunk: sb.chunk,
    members: sb.members,
    role: sb.role === SPARE_ROLE ? 'spare' : sb.role,
    state: released ? 'released' : (entry?.state ?? 'unlisted'),
    events: sb.events,
    clean: sb.clean,
    arraySize: sb.arraySize,
    memberDataSize: sb.rows * sb.chunk,
    dataOffset: DATA_OFFSET,
    bitmap: { regionBytes: sb.bitmapRegion, regions, dirtyRegions: dirty },
    created: new Date(sb.createdMs).toISOString(),
    table: sb.table,
    ...(problem ? { problem } : {}),
  };
}
