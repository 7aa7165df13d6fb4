import {
  checkHeader,
  DIFF_MAGIC,
  DIFF_VERSION,
  DiffStreamError,
  hasher,
  HEAD_BYTES,
  MAX_BODY_BYTES,
  MAX_DATA_RECORD,
  PREFIX_BYTES,
  RECORD_DATA,
  RECORD_END,
  RECORD_ZERO,
  recordName,
  type DiffHeader,
  type DiffRecord,
  type DiffTotals,
  type DiffStreamErrorCode,
} from './diff-stream.js';
import { ByteQueue } from './byte-queue.js';

const PREFIX_SEED = 0x53444946;
/** The first line of an RBD diff (`rbd export-diff`), recognised so the error says what the file is. */
const RBD_MAGIC = 'rbd diff v';

/**
 * Reads a diff stream front to back from any source of byte chunks (a file,
 * a pipe, a socket), checking everything as it goes: nothing is returned
 * before its checksum verified, records must follow in sequence and in
 * increasing offset order, and the stream must end with an end record whose
 * totals match what came before, with nothing after it.
 */
export class DiffStreamReader {
  private readonly bytes: ByteQueue;
  /** Bytes of the stream consumed so far: where the next piece starts. */
  private pos = 0;
  private seed = 0n;
  private hdr: DiffHeader | undefined;
  private seq = 0;
  private next = 0;
  private dataBytes = 0;
  private zeroBytes = 0;
  private finished = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.bytes = new ByteQueue(source);
  }

  /** Byte offset in the stream of what is read next. */
  get position(): number {
    return this.pos;
  }

  /** Reads and checks the header; must come first. */
  async header(): Promise<DiffHeader> {
    if (this.hdr) return this.hdr;
    const h = hasher();
    const prefix = await this.take(PREFIX_BYTES, null, 'the header');
    if (!prefix.subarray(0, 8).equals(DIFF_MAGIC)) {
      if (prefix.subarray(0, RBD_MAGIC.length).toString('latin1') === RBD_MAGIC) throw this.fail('EMAGIC', null, 0, 'this is an RBD diff (rbd export-diff), not a Strata diff stream');
      throw this.fail('EMAGIC', null, 0, 'not a Strata diff stream (its first 8 bytes are not the diff magic)');
    }
    const version = prefix.readUInt16LE(8);
    const prefixOk = prefix.readUInt32LE(16) === h.h32(prefix.subarray(0, 16), PREFIX_SEED);
    if (!prefixOk) throw this.fail('ECORRUPT', null, 0, 'header damaged (the checksum of its first 16 bytes does not match)');
    if (version !== DIFF_VERSION) throw this.fail('EVERSION', null, 8, `stream version ${version}; this Strata reads version ${DIFF_VERSION}${version > DIFF_VERSION ? ' (a newer Strata wrote it)' : ''}`);
    const flags = prefix.readUInt16LE(10);
    if (flags !== 0) throw this.fail('EVERSION', null, 10, `stream uses feature flags 0x${flags.toString(16)} that this Strata does not know`);
    const bodyLength = prefix.readUInt32LE(12);
    if (bodyLength > MAX_BODY_BYTES) throw this.fail('ECORRUPT', null, 12, `header body of ${bodyLength} bytes (at most ${MAX_BODY_BYTES})`);
    const body = await this.take(bodyLength, null, 'the header');
    const sumAt = this.pos;
    const sum = (await this.take(8, null, 'the header')).readBigUInt64LE(0);
    const seed = h.h64(Buffer.concat([prefix, body]), 0n);
    if (sum !== seed) throw this.fail('ECORRUPT', null, sumAt, 'header damaged (its checksum does not match)');
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw this.fail('ECORRUPT', null, PREFIX_BYTES, 'header body is not JSON');
    }
    checkHeader(parsed, (m) => this.fail('EINVAL', null, PREFIX_BYTES, `header: ${m}`));
    this.seed = seed;
    this.hdr = parsed;
    return parsed;
  }

  /** The next data or zero record, verified; null once the end record was read and checked. */
  async record(): Promise<DiffRecord | null> {
    if (!this.hdr) await this.header();
    if (this.finished) return null;
    const h = hasher();
    const at = this.pos;
    const seq = this.seq;
    const head = await this.take(HEAD_BYTES, seq, `record ${seq}'s head`, true);
    if (head.readBigUInt64LE(32) !== h.h64(head.subarray(0, 32), this.seed)) throw this.fail('ECORRUPT', seq, at, `record ${seq}: head damaged (its checksum does not match; or a record of another stream)`);
    const kind = head.readUInt8(0);
    const gotSeq = head.readUInt32LE(4);
    if (gotSeq !== seq) throw this.fail('ECORRUPT', seq, at, `record ${seq}: sequence number ${gotSeq} where ${seq} was due (a record is missing or repeated)`);
    if (head.readUInt8(1) !== 0 || head.readUInt16LE(2) !== 0) throw this.fail('EVERSION', seq, at, `record ${seq}: flags this Strata does not know`);
    const offset = this.u64(head, 8, seq, at);
    const length = this.u64(head, 16, seq, at);
    const size = this.hdr!.size;
    if (kind === RECORD_END) {
      if (offset !== this.dataBytes || length !== this.zeroBytes) throw this.fail('ECORRUPT', seq, at, `end record: totals ${offset} data / ${length} zero bytes, but the records held ${this.dataBytes} / ${this.zeroBytes}`);
      this.seq++;
      await this.expectEnd();
      this.finished = true;
      return null;
    }
    if (kind !== RECORD_DATA && kind !== RECORD_ZERO) throw this.fail('ECORRUPT', seq, at, `record ${seq}: unknown type ${recordName(kind)}`);
    const what = `record ${seq} (${recordName(kind)} at ${offset}, ${length} bytes)`;
    if (length === 0) throw this.fail('ECORRUPT', seq, at, `${what}: empty`);
    if (offset < this.next) throw this.fail('ECORRUPT', seq, at, `${what}: overlaps or precedes the record before, which ends at ${this.next}`);
    if (offset + length > size) throw this.fail('ECORRUPT', seq, at, `${what}: runs past the volume's size ${size}`);
    if (kind === RECORD_ZERO) {
      this.advance(offset, length);
      this.zeroBytes += length;
      return { kind: 'zero', offset, length };
    }
    if (length > MAX_DATA_RECORD) throw this.fail('ECORRUPT', seq, at, `${what}: longer than a data record may be (${MAX_DATA_RECORD})`);
    const payloadAt = this.pos;
    const data = await this.take(length, seq, `${what}'s data`);
    if (head.readBigUInt64LE(24) !== h.h64(data, this.seed)) throw this.fail('ECORRUPT', seq, payloadAt, `${what}: data damaged (its checksum does not match)`);
    this.advance(offset, length);
    this.dataBytes += length;
    return { kind: 'data', offset, data };
  }

  /** What the records held; final once record() returned null. */
  totals(): DiffTotals {
    return { records: this.finished ? this.seq - 1 : this.seq, dataBytes: this.dataBytes, zeroBytes: this.zeroBytes };
  }

  private advance(offset: number, length: number): void {
    this.next = offset + length;
    this.seq++;
  }

  private u64(b: Buffer, at: number, seq: number, streamAt: number): number {
    const v = b.readBigUInt64LE(at);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail('ECORRUPT', seq, streamAt, `record ${seq}: a field holds ${v}, beyond any volume`);
    return Number(v);
  }

  private async expectEnd(): Promise<void> {
    const at = this.pos;
    await this.bytes.fill(1);
    if (this.bytes.buffered > 0) throw this.fail('ECORRUPT', this.seq, at, `${this.bytes.buffered === 1 ? 'a byte' : 'bytes'} after the end record (a stream must end there)`);
  }

  /** Exactly `n` bytes; a stream that ends first is a truncation, named by what was being read. */
  private async take(n: number, record: number | null, what: string, atRecordStart = false): Promise<Buffer> {
    const got = await this.bytes.take(n);
    if (!got) {
      const have = this.bytes.buffered;
      const why = atRecordStart && have === 0 ? `the stream ends after ${record} record${record === 1 ? '' : 's'}, without an end record` : `the stream ends inside ${what} (${n - have} of ${n} bytes missing)`;
      throw this.fail('ETRUNCATED', record, this.pos + have, `truncated: ${why}`);
    }
    this.pos += n;
    return got;
  }

  private fail(code: DiffStreamErrorCode, record: number | null, at: number, message: string): DiffStreamError {
    return new DiffStreamError(code, record, at, `${message} (at byte ${at} of the stream)`);
  }
}
