import { hasher } from '../snapshot/diff-stream.js';
import type { DiffPoint } from '../snapshot/diff-stream.js';

/**
 * The send stream: what `strata send` writes and `strata receive` reads. A
 * container of diff streams (docs/diff-stream.md), one *section* per step of
 * a volume's history, oldest first, as `zfs send -I` carries a series of
 * snapshots. Layout (all integers little-endian; docs/diff-stream.md, "The
 * send stream"):
 *
 *   prefix    magic(8) version(u16) flags(u16) bodyLength(u32) xxh32(prefix[0..16])
 *   manifest  UTF-8 JSON (SendManifest)
 *   sum       xxh64(prefix ++ manifest): the seed of every frame head's checksum
 *   frames    16-byte head: type(u8) flags(u8) reserved(u16) section(u32) length(u32) xxh32(head[0..12])
 *             then `length` bytes for a data frame: the section's diff stream, piece by piece
 *
 * A section is its data frames, then a finish frame; the stream ends with an
 * end frame whose section field counts the sections it carried. The diff
 * streams inside check every byte they carry; the frame heads check the
 * framing, so a cut, a dropped frame or a splice is named where it is.
 */

/** `\x89SSND\r\n\x1a`: the diff stream's kind of magic, another name. */
export const SEND_MAGIC = Buffer.from([0x89, 0x53, 0x53, 0x4e, 0x44, 0x0d, 0x0a, 0x1a]);
export const SEND_VERSION = 1;
export const SEND_PREFIX_BYTES = 20;
export const FRAME_BYTES = 16;
/** A data frame carries at most this much of a section's diff stream. */
export const MAX_FRAME = 1024 * 1024;
export const MAX_MANIFEST_BYTES = 1024 * 1024;
export const PREFIX_SEED = 0x53534e44;

export const FRAME_DATA = 0x44; // 'D'
export const FRAME_FINISH = 0x46; // 'F'
export const FRAME_END = 0x45; // 'E'

/** One step of the history: the diff stream from FROM (null: an empty disk) to TO. */
export interface SendSection {
  from: DiffPoint | null;
  to: DiffPoint;
  size: number;
  /** The clone's origin (a template or another volume's snapshot), sent first so the receiver can make or reuse it. */
  base?: true;
  /** A base section left out of the stream: the receiver holds the origin already (a migration asked it first). */
  omitted?: true;
}

export interface SendManifest {
  /** Names this stream (its sections' end points), so a resumed one is known for the same. */
  stream: string;
  /** The sending volume, for messages. */
  volume: string;
  created: string;
  sections: SendSection[];
  /** The last section's TO is a snapshot the sender took for this stream only: the receiver merges it away at the end. */
  temporary: boolean;
  /** A resumed stream: it starts at this section, whose records start at `through` (what the receiver holds already). */
  resume: { section: number; through: number } | null;
}

export type SendStreamErrorCode = 'EMAGIC' | 'EVERSION' | 'ECORRUPT' | 'ETRUNCATED' | 'EINVAL';

export class SendStreamError extends Error {
  constructor(
    readonly code: SendStreamErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'SendStreamError';
  }
}

/** The header's bytes and the seed every frame head is checked with. */
export function encodeManifest(m: SendManifest): { bytes: Buffer; seed: number } {
  const h = hasher();
  const body = Buffer.from(JSON.stringify(m), 'utf8');
  const prefix = Buffer.alloc(SEND_PREFIX_BYTES);
  SEND_MAGIC.copy(prefix, 0);
  prefix.writeUInt16LE(SEND_VERSION, 8);
  prefix.writeUInt16LE(0, 10);
  prefix.writeUInt32LE(body.length, 12);
  prefix.writeUInt32LE(h.h32(prefix.subarray(0, 16), PREFIX_SEED), 16);
  const sum = h.h64(Buffer.concat([prefix, body]), 0n);
  const tail = Buffer.alloc(8);
  tail.writeBigUInt64LE(sum);
  return { bytes: Buffer.concat([prefix, body, tail]), seed: frameSeed(sum) };
}

export function frameSeed(sum: bigint): number {
  return Number(sum & 0xffffffffn);
}

export function frameHead(type: number, section: number, length: number, seed: number): Buffer {
  const b = Buffer.alloc(FRAME_BYTES);
  b.writeUInt8(type, 0);
  b.writeUInt32LE(section, 4);
  b.writeUInt32LE(length, 8);
  b.writeUInt32LE(hasher().h32(b.subarray(0, 12), seed), 12);
  return b;
}

/** Checks a manifest read from a stream; `fail` makes the error. */
export function checkManifest(raw: unknown, fail: (m: string) => Error): asserts raw is SendManifest {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw fail('not a JSON object');
  const r = raw as Record<string, unknown>;
  if (typeof r.stream !== 'string' || r.stream.length === 0) throw fail("'stream' is missing");
  if (typeof r.volume !== 'string' || r.volume.length === 0) throw fail("'volume' is missing");
  if (!Array.isArray(r.sections) || r.sections.length === 0) throw fail("'sections' is not a list of sections");
  const isPoint = (p: unknown): boolean => typeof p === 'object' && p !== null && typeof (p as DiffPoint).uuid === 'string' && typeof (p as DiffPoint).name === 'string';
  for (const [i, s] of (r.sections as unknown[]).entries()) {
    const sec = s as Record<string, unknown>;
    if (typeof sec !== 'object' || sec === null || !isPoint(sec.to) || (sec.from !== null && !isPoint(sec.from)) || typeof sec.size !== 'number' || !Number.isSafeInteger(sec.size) || sec.size <= 0) throw fail(`section ${i} is not a section`);
  }
  if (typeof r.temporary !== 'boolean') throw fail("'temporary' is missing");
  if (r.resume !== null) {
    const res = r.resume as Record<string, unknown>;
    if (typeof res !== 'object' || !Number.isSafeInteger(res.section) || !Number.isSafeInteger(res.through) || (res.section as number) < 0 || (res.section as number) > r.sections.length || (res.through as number) < 0) throw fail("'resume' is not a resume point");
  }
}
