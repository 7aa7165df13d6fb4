import { xxhashLoaded } from '../blockdev/xxhash.js';

/**
 * The diff stream: what `strata export-diff` writes and `import-diff` reads.
 * The byte layout is in docs/diff-stream.md; in short:
 *
 *   prefix  magic(8) version(u16) flags(u16) bodyLength(u32) xxh32(prefix[0..16])
 *   body    UTF-8 JSON: size, from {uuid,name} | null, to {uuid,name}, volume, created
 *   sum     xxh64(prefix ++ body): the stream's seed, which every record's checksums use
 *   records 40-byte head (type, flags, seq, offset, length, payload sum, head sum), then
 *           `length` bytes for a data record; zero and end records carry none
 *
 * All integers little-endian. Every byte is covered by a checksum, every
 * record by a running sequence, so damage, a cut, a splice from another
 * stream and a dropped record are each found and named by record and byte.
 */

/** `\x89SDIF\r\n\x1a`: a high byte and CR LF / ^Z, as PNG's magic, so a text-mode copy that mangled the stream is seen at once. */
export const DIFF_MAGIC = Buffer.from([0x89, 0x53, 0x44, 0x49, 0x46, 0x0d, 0x0a, 0x1a]);
export const DIFF_VERSION = 1;
/** Bytes before the JSON body; they keep this layout in every version, so a reader can always name a version it does not know. */
export const PREFIX_BYTES = 20;
export const HEAD_BYTES = 40;
/** A data record carries at most this much: a reader never holds more than one such piece at a time. */
export const MAX_DATA_RECORD = 4 * 1024 * 1024;
/** The JSON body is small (two names, two UUIDs); anything longer is damage, not a header. */
export const MAX_BODY_BYTES = 64 * 1024;

export const RECORD_DATA = 0x44; // 'D'
export const RECORD_ZERO = 0x5a; // 'Z'
export const RECORD_END = 0x45; // 'E'

const PREFIX_SEED = 0x53444946;

/** A point of a volume's history: a snapshot, known by a UUID that stays with it for life, and its name. */
export interface DiffPoint {
  uuid: string;
  name: string;
}

export interface DiffHeader {
  /** The volume's size at the TO point. */
  size: number;
  /** The base the stream applies to; null for a full stream (applies to an empty volume). */
  from: DiffPoint | null;
  to: DiffPoint;
  /** The volume the stream was taken from, for messages. */
  volume: string;
  /** When the stream was written (ISO 8601). */
  created: string;
}

export type DiffRecord = { kind: 'data'; offset: number; data: Buffer } | { kind: 'zero'; offset: number; length: number };

export interface DiffTotals {
  /** Data and zero records (the end record's sequence number). */
  records: number;
  dataBytes: number;
  zeroBytes: number;
}

export type DiffStreamErrorCode = 'EMAGIC' | 'EVERSION' | 'ECORRUPT' | 'ETRUNCATED' | 'EINVAL';

/** What is wrong with a stream, and where: the record (by sequence number, null for the header) and the byte offset in the stream. */
export class DiffStreamError extends Error {
  constructor(
    readonly code: DiffStreamErrorCode,
    readonly record: number | null,
    readonly streamOffset: number,
    message: string,
  ) {
    super(message);
    this.name = 'DiffStreamError';
  }
}

export function hasher(): { h32(buf: Uint8Array, seed: number): number; h64(buf: Uint8Array, seed: bigint): bigint } {
  const api = xxhashLoaded();
  if (!api) throw new Error('diff stream used before loadXxhash()');
  return { h32: (b, s) => api.h32Raw(b, s) >>> 0, h64: (b, s) => api.h64Raw(b, s) };
}

export function recordName(kind: number): string {
  return kind === RECORD_DATA ? 'data' : kind === RECORD_ZERO ? 'zero' : kind === RECORD_END ? 'end' : `unknown (0x${kind.toString(16)})`;
}

/**
 * Writes a stream piece by piece: the header, then data and zero records in
 * increasing offset order, then end(). Each call returns the bytes to write;
 * a data piece larger than MAX_DATA_RECORD becomes several records.
 */
export class DiffEncoder {
  private readonly seed: bigint;
  private readonly headerBytes: Buffer;
  private seq = 0;
  private next = 0;
  private dataBytes = 0;
  private zeroBytes = 0;
  private ended = false;

  constructor(readonly header: DiffHeader) {
    checkHeader(header, (m) => new Error(`diff header: ${m}`));
    const body = Buffer.from(JSON.stringify(header), 'utf8');
    if (body.length > MAX_BODY_BYTES) throw new Error(`diff header: ${body.length} bytes of names is more than ${MAX_BODY_BYTES}`);
    const h = hasher();
    const prefix = Buffer.alloc(PREFIX_BYTES);
    DIFF_MAGIC.copy(prefix, 0);
    prefix.writeUInt16LE(DIFF_VERSION, 8);
    prefix.writeUInt16LE(0, 10);
    prefix.writeUInt32LE(body.length, 12);
    prefix.writeUInt32LE(h.h32(prefix.subarray(0, 16), PREFIX_SEED), 16);
    const sum = Buffer.alloc(8);
    this.seed = h.h64(Buffer.concat([prefix, body]), 0n);
    sum.writeBigUInt64LE(this.seed);
    this.headerBytes = Buffer.concat([prefix, body, sum]);
  }

  /** The header's bytes: written first. */
  start(): Buffer {
    return this.headerBytes;
  }

  /** Data records for `data` at `offset` (several when it is long); the returned buffers share `data`'s memory. */
  data(offset: number, data: Buffer): Buffer[] {
    const out: Buffer[] = [];
    for (let at = 0; at < data.length; at += MAX_DATA_RECORD) {
      const piece = data.subarray(at, Math.min(data.length, at + MAX_DATA_RECORD));
      this.claim(offset + at, piece.length);
      out.push(this.head(RECORD_DATA, offset + at, piece.length, hasher().h64(piece, this.seed)), piece);
      this.dataBytes += piece.length;
    }
    return out;
  }

  zero(offset: number, length: number): Buffer {
    this.claim(offset, length);
    this.zeroBytes += length;
    return this.head(RECORD_ZERO, offset, length, 0n);
  }

  /** The end record: its sequence number is the count of records before it, its offset and length the data and zero bytes. */
  end(): Buffer {
    if (this.ended) throw new Error('diff stream ended twice');
    this.ended = true;
    return this.head(RECORD_END, this.dataBytes, this.zeroBytes, 0n);
  }

  totals(): DiffTotals {
    return { records: this.seq - (this.ended ? 1 : 0), dataBytes: this.dataBytes, zeroBytes: this.zeroBytes };
  }

  private claim(offset: number, length: number): void {
    if (this.ended) throw new Error('diff record after the end record');
    if (length <= 0) throw new Error(`diff record at ${offset} is empty`);
    if (offset < this.next) throw new Error(`diff record at ${offset} overlaps or precedes the one before (which ends at ${this.next})`);
    if (offset + length > this.header.size) throw new Error(`diff record at ${offset} (+${length}) runs past the volume's size ${this.header.size}`);
    this.next = offset + length;
  }

  private head(kind: number, offset: number, length: number, payloadSum: bigint): Buffer {
    const b = Buffer.alloc(HEAD_BYTES);
    b.writeUInt8(kind, 0);
    b.writeUInt32LE(this.seq++, 4);
    b.writeBigUInt64LE(BigInt(offset), 8);
    b.writeBigUInt64LE(BigInt(length), 16);
    b.writeBigUInt64LE(payloadSum, 24);
    b.writeBigUInt64LE(hasher().h64(b.subarray(0, 32), this.seed), 32);
    return b;
  }
}

/** Checks the header's fields; `fail` makes the error (the encoder's and the decoder's differ). */
export function checkHeader(h: unknown, fail: (message: string) => Error): asserts h is DiffHeader {
  if (typeof h !== 'object' || h === null || Array.isArray(h)) throw fail('not a JSON object');
  const r = h as Record<string, unknown>;
  if (typeof r.size !== 'number' || !Number.isSafeInteger(r.size) || r.size <= 0) throw fail("'size' is not a whole number of bytes above 0");
  const point = (key: string, v: unknown): void => {
    if (typeof v !== 'object' || v === null) throw fail(`'${key}' is not a snapshot`);
    const p = v as Record<string, unknown>;
    if (typeof p.uuid !== 'string' || p.uuid.length === 0 || p.uuid.length > 128) throw fail(`'${key}.uuid' is not a UUID`);
    if (typeof p.name !== 'string' || p.name.length === 0 || p.name.length > 255) throw fail(`'${key}.name' is not a snapshot name`);
  };
  if (r.from !== null) point('from', r.from);
  point('to', r.to);
  if (typeof r.volume !== 'string' || r.volume.length === 0 || r.volume.length > 255) throw fail("'volume' is not a volume name");
  if (typeof r.created !== 'string') throw fail("'created' is not a time");
}
