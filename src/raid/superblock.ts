import { randomBytes } from 'node:crypto';
import type { XXHashAPI } from 'xxhash-wasm';
import { loadXxhash, xxhashLoaded } from '../blockdev/xxhash.js';
import { levelDescriptor, type RaidLevel } from './levels/index.js';
import { RaidError } from './errors.js';

/**
 * The member header. Every member starts with two 4 KiB superblock slots; an
 * update writes slot (events mod 2), so a torn write leaves the other slot
 * intact and assembly takes the valid slot with the higher event count. The
 * write-intent bitmap follows, then the data at DATA_OFFSET.
 */
export const SUPERBLOCK_SIZE = 4096;
export const BITMAP_OFFSET = 2 * SUPERBLOCK_SIZE;
/** 64 KiB keeps data page-aligned and leaves 56 KiB of bitmap: 458,752 regions. */
export const DATA_OFFSET = 64 * 1024;
export const BITMAP_MAX_BYTES = DATA_OFFSET - BITMAP_OFFSET;
export const MAGIC = 'STRATARD';
/** The magic of a member released by remove or replace: assembly no longer sees a member, examine still reads it. */
export const RELEASED_MAGIC = 'STRATARX';
export const VERSION = 1;
const CHECKSUM_AT = SUPERBLOCK_SIZE - 8;
const TABLE_AT = 160;
const ENTRY_SIZE = 32;
export const MAX_ENTRIES = Math.floor((CHECKSUM_AT - TABLE_AT) / ENTRY_SIZE);
export const SPARE_ROLE = 0xffff;

/** A role's state in the array, as the freshest superblock records it. */
export type MemberState = 'missing' | 'active' | 'faulty' | 'rebuilding' | 'spare';
const STATE_CODES: readonly MemberState[] = ['missing', 'active', 'faulty', 'rebuilding', 'spare'];

export interface RoleEntry {
  /** Device UUID of the member in this role (hex), '' when none. */
  device: string;
  state: MemberState;
  /** For 'rebuilding': rows of member data already rebuilt (the resume checkpoint). */
  rebuiltRows: number;
}

export interface Superblock {
  arrayUuid: string;
  deviceUuid: string;
  level: RaidLevel;
  /** RAID 10: copies per chunk; otherwise 1. */
  copies: number;
  /** True after a clean close: the bitmap is empty and every stripe is consistent. */
  clean: boolean;
  members: number;
  chunk: number;
  /** Member bytes per bitmap bit (a multiple of chunk). */
  bitmapRegion: number;
  /** Rows of chunks per member: member data is rows × chunk bytes from DATA_OFFSET. */
  rows: number;
  arraySize: number;
  events: number;
  /** This member's role: 0 … members−1, or SPARE_ROLE. */
  role: number;
  createdMs: number;
  name: string;
  /** One entry per role, then one per spare. */
  table: RoleEntry[];
}

export function initChecksum(): Promise<XXHashAPI> {
  return loadXxhash();
}

function hasher(): XXHashAPI {
  const h = xxhashLoaded();
  if (!h) throw new Error('superblock checksum not initialised');
  return h;
}

export function newUuid(): string {
  return randomBytes(16).toString('hex');
}

/** Encodes into a 4 KiB block with its checksum. initChecksum() must have resolved. */
export function encodeSuperblock(sb: Superblock, magic: string = MAGIC): Buffer {
  const h = hasher();
  if (sb.table.length > MAX_ENTRIES) throw new RaidError('EINVAL', `too many members and spares (at most ${MAX_ENTRIES})`);
  const b = Buffer.alloc(SUPERBLOCK_SIZE);
  b.write(magic, 0, 'latin1');
  b.writeUInt32LE(VERSION, 8);
  b.writeUInt32LE(DATA_OFFSET, 12);
  b.write(sb.arrayUuid, 16, 16, 'hex');
  b.write(sb.deviceUuid, 32, 16, 'hex');
  b.writeUInt8(sb.level, 48);
  b.writeUInt8(sb.copies, 49);
  b.writeUInt8(sb.clean ? 1 : 0, 50);
  b.writeUInt16LE(sb.members, 52);
  b.writeUInt16LE(sb.table.length, 54);
  b.writeUInt32LE(sb.chunk, 56);
  b.writeBigUInt64LE(BigInt(sb.bitmapRegion), 64);
  b.writeBigUInt64LE(BigInt(sb.rows), 72);
  b.writeBigUInt64LE(BigInt(sb.arraySize), 80);
  b.writeBigUInt64LE(BigInt(sb.events), 88);
  b.writeUInt16LE(sb.role, 96);
  b.writeBigUInt64LE(BigInt(sb.createdMs), 104);
  const name = Buffer.from(sb.name, 'utf8');
  if (name.length > 48) throw new RaidError('EINVAL', `array name '${sb.name}' is longer than 48 bytes`);
  name.copy(b, 112);
  sb.table.forEach((e, i) => {
    const at = TABLE_AT + i * ENTRY_SIZE;
    if (e.device) b.write(e.device, at, 16, 'hex');
    b.writeUInt8(STATE_CODES.indexOf(e.state), at + 16);
    b.writeBigUInt64LE(BigInt(e.rebuiltRows), at + 24);
  });
  b.writeBigUInt64LE(h.h64Raw(b.subarray(0, CHECKSUM_AT)), CHECKSUM_AT);
  return b;
}

/** Decodes one slot; undefined when it is not a valid Strata RAID superblock (wrong magic or checksum). */
export function decodeSuperblock(b: Buffer, magic: string = MAGIC): Superblock | undefined {
  const h = hasher();
  if (b.length < SUPERBLOCK_SIZE || b.toString('latin1', 0, 8) !== magic) return undefined;
  if (b.readBigUInt64LE(CHECKSUM_AT) !== h.h64Raw(b.subarray(0, CHECKSUM_AT))) return undefined;
  const version = b.readUInt32LE(8);
  if (version !== VERSION) throw new RaidError('EFORMAT', `superblock version ${version} is not supported (this build reads version ${VERSION})`);
  const entries = b.readUInt16LE(54);
  if (entries > MAX_ENTRIES) return undefined;
  const table: RoleEntry[] = [];
  for (let i = 0; i < entries; i++) {
    const at = TABLE_AT + i * ENTRY_SIZE;
    const device = b.toString('hex', at, at + 16);
    table.push({
      device: /^0+$/.test(device) ? '' : device,
      state: STATE_CODES[b.readUInt8(at + 16)] ?? 'faulty',
      rebuiltRows: Number(b.readBigUInt64LE(at + 24)),
    });
  }
  const nameEnd = b.indexOf(0, 112);
  return {
    arrayUuid: b.toString('hex', 16, 32),
    deviceUuid: b.toString('hex', 32, 48),
    level: b.readUInt8(48) as RaidLevel,
    copies: b.readUInt8(49),
    clean: b.readUInt8(50) === 1,
    members: b.readUInt16LE(52),
    chunk: b.readUInt32LE(56),
    bitmapRegion: Number(b.readBigUInt64LE(64)),
    rows: Number(b.readBigUInt64LE(72)),
    arraySize: Number(b.readBigUInt64LE(80)),
    events: Number(b.readBigUInt64LE(88)),
    role: b.readUInt16LE(96),
    createdMs: Number(b.readBigUInt64LE(104)),
    name: b.toString('utf8', 112, nameEnd >= 112 && nameEnd < 160 ? nameEnd : 160),
    table,
  };
}

/** Both slots of a member header; the valid one with the most events, or undefined. */
export function newestSuperblock(header: Buffer, magic: string = MAGIC): Superblock | undefined {
  const a = decodeSuperblock(header.subarray(0, SUPERBLOCK_SIZE), magic);
  const b = decodeSuperblock(header.subarray(SUPERBLOCK_SIZE, 2 * SUPERBLOCK_SIZE), magic);
  if (!a) return b;
  if (!b) return a;
  return a.events >= b.events ? a : b;
}

export function slotOffset(events: number): number {
  return (events % 2) * SUPERBLOCK_SIZE;
}

/**
 * Checks that a superblock with a valid checksum also describes a sane array,
 * so a crafted or buggy header is refused with a reason instead of driving
 * the array into absurd sizes. Returns the problem, or undefined.
 */
export function superblockProblem(sb: Superblock, deviceSize: number): string | undefined {
  if (![0, 1, 5, 6, 10].includes(sb.level)) return `unknown RAID level ${sb.level}`;
  if (sb.members < levelDescriptor(sb.level).minMembers) return `RAID ${sb.level} with ${sb.members} members`;
  if (sb.table.length < sb.members) return `role table has ${sb.table.length} entries for ${sb.members} members`;
  if (sb.chunk < 4096 || sb.chunk > 64 * 1024 * 1024 || (sb.chunk & (sb.chunk - 1)) !== 0) return `invalid chunk size ${sb.chunk}`;
  if (sb.level === 10 ? sb.copies < 2 || sb.copies > sb.members : sb.level === 1 ? sb.copies !== sb.members : sb.copies !== 1) return `invalid copies ${sb.copies}`;
  if (sb.rows < 1 || !Number.isSafeInteger(sb.rows * sb.chunk)) return `invalid row count ${sb.rows}`;
  if (sb.bitmapRegion < sb.chunk || sb.bitmapRegion % sb.chunk !== 0) return `invalid bitmap region ${sb.bitmapRegion}`;
  if (Math.ceil(sb.rows / (sb.bitmapRegion / sb.chunk)) > BITMAP_MAX_BYTES * 8) return 'bitmap larger than its area';
  const capacity = sb.level === 5 || sb.level === 6 ? sb.rows * (sb.members - (sb.level === 5 ? 1 : 2)) * sb.chunk : Math.floor((sb.rows * sb.members) / sb.copies) * sb.chunk;
  if (sb.arraySize < 1 || sb.arraySize > capacity) return `array size ${sb.arraySize} larger than the members hold`;
  if (sb.role !== SPARE_ROLE && sb.role >= sb.members) return `role ${sb.role} of ${sb.members}`;
  if (deviceSize < DATA_OFFSET + sb.rows * sb.chunk) return `device holds ${deviceSize} bytes, the array needs ${DATA_OFFSET + sb.rows * sb.chunk} per member`;
  return undefined;
}
