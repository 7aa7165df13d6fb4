import type { BlockDevice } from '../blockdev/index.js';
import { metaChecksum } from './checksum.js';
import { PoolError } from './errors.js';

/**
 * The metadata write-ahead journal: a region of the pool holding the
 * transactions committed since the last checkpoint. A transaction is a list
 * of records (INIT a block to zeroes, DELTA bytes into a block, INTENT to
 * overwrite data in place under an L2 table), sealed by one xxh64; replay stops at the first transaction
 * that is absent, torn or from an older generation. Each transaction is padded
 * to a sector so appending never rewrites a sector holding committed bytes.
 */
const SECTOR = 512;
const HEADER_MAGIC = Buffer.from('STRJRNL1', 'latin1');
const TXN_MAGIC = 0x4e58544a; // 'JTXN'
const TXN_HEADER = 32;
const RECORD_HEADER = 16;

export enum RecordType {
  Init = 1,
  Delta = 2,
  Intent = 3,
  /** Ends an INTENT: what was written under it is durable and its checksums committed. */
  IntentEnd = 4,
}

export interface JournalRecord {
  type: RecordType;
  /** INIT, INTENT and INTENT_END: cluster index; DELTA: byte address on the device (cluster * size + offset). */
  target: number;
  payload: Buffer;
}

/** Serializes records into one sealed, sector-padded transaction. */
export function encodeTransaction(generation: bigint, seq: bigint, records: readonly JournalRecord[]): Buffer {
  let body = 0;
  for (const r of records) body += RECORD_HEADER + align8(r.payload.length);
  const total = alignSector(TXN_HEADER + body + 8);
  const b = Buffer.alloc(total);
  b.writeUInt32LE(TXN_MAGIC, 0);
  b.writeUInt32LE(records.length, 4);
  b.writeBigUInt64LE(generation, 8);
  b.writeBigUInt64LE(seq, 16);
  b.writeUInt32LE(body, 24);
  let at = TXN_HEADER;
  for (const r of records) {
    b.writeUInt8(r.type, at);
    b.writeUInt32LE(r.payload.length, at + 4);
    b.writeBigUInt64LE(BigInt(r.target), at + 8);
    r.payload.copy(b, at + RECORD_HEADER);
    at += RECORD_HEADER + align8(r.payload.length);
  }
  b.writeBigUInt64LE(metaChecksum(b.subarray(0, at)), at);
  return b;
}

export function transactionSize(records: readonly JournalRecord[]): number {
  let body = 0;
  for (const r of records) body += RECORD_HEADER + align8(r.payload.length);
  return alignSector(TXN_HEADER + body + 8);
}

export class Journal {
  generation = 1n;
  seq = 0n;
  /** Byte offset within the region where the next transaction goes. */
  used = SECTOR;

  constructor(
    private readonly dev: BlockDevice,
    /** Byte offset of the region on the device. */
    readonly start: number,
    readonly bytes: number,
  ) {}

  get free(): number {
    return this.bytes - this.used;
  }

  /**
   * Byte offset of the header's copy (pools with copies, docs/FORMAT.md), or
   * undefined. Both copies are written together; read() takes the newest one
   * that verifies, so a crash between the two writes, or a damaged one, costs
   * nothing.
   */
  copyAt: number | undefined;
  /** What read() found wrong with a header copy (damaged, or a generation behind), for the pool to report. */
  headerDamage: Array<{ offset: number; why: string; damaged: boolean }> = [];

  /** Writes a fresh, empty journal of the given generation (at creation and after each checkpoint). */
  async reset(generation: bigint): Promise<void> {
    await this.writeHeader(generation);
    this.generation = generation;
    this.seq = 0n;
    this.used = SECTOR;
  }

  /** Rewrites every header copy with the current generation, leaving the log as it is (a copy found bad at open). */
  async rewriteHeader(): Promise<void> {
    await this.writeHeader(this.generation);
    this.headerDamage = [];
  }

  private async writeHeader(generation: bigint): Promise<void> {
    const h = Buffer.alloc(SECTOR);
    HEADER_MAGIC.copy(h, 0);
    h.writeBigUInt64LE(generation, 8);
    h.writeBigUInt64LE(metaChecksum(h.subarray(0, SECTOR - 8)), SECTOR - 8);
    await Promise.all([this.start, ...(this.copyAt === undefined ? [] : [this.copyAt])].map((at) => this.dev.write(h, at)));
  }

  /** The generation of the newest header copy that verifies; notes the others in headerDamage. */
  private async readHeader(): Promise<bigint> {
    const found: Array<{ offset: number; generation: bigint | undefined }> = [];
    for (const offset of [this.start, ...(this.copyAt === undefined ? [] : [this.copyAt])]) {
      const h = Buffer.alloc(SECTOR);
      let ok = false;
      try {
        await this.dev.read(h, offset);
        ok = h.subarray(0, 8).equals(HEADER_MAGIC) && h.readBigUInt64LE(SECTOR - 8) === metaChecksum(h.subarray(0, SECTOR - 8));
      } catch {
        ok = false;
      }
      found.push({ offset, generation: ok ? h.readBigUInt64LE(8) : undefined });
    }
    let best: bigint | undefined;
    for (const f of found) if (f.generation !== undefined && (best === undefined || f.generation > best)) best = f.generation;
    if (best === undefined) {
      const copy = this.copyAt === undefined ? '' : ` and its copy at offset ${this.copyAt}`;
      throw new PoolError('ECORRUPT', `${this.dev.name}: journal header at offset ${this.start}${copy} ${this.copyAt === undefined ? 'is' : 'are'} damaged`);
    }
    this.headerDamage = [];
    for (const f of found) {
      if (f.generation === best) continue;
      this.headerDamage.push(f.generation === undefined ? { offset: f.offset, why: 'checksum mismatch', damaged: true } : { offset: f.offset, why: `generation ${f.generation}, behind ${best}`, damaged: false });
    }
    return best;
  }

  async append(records: readonly JournalRecord[]): Promise<void> {
    const txn = encodeTransaction(this.generation, this.seq, records);
    if (txn.length > this.free) throw new PoolError('ENOSPC', `journal full: a ${txn.length}-byte transaction does not fit in ${this.free} bytes`);
    await this.dev.write(txn, this.start + this.used);
    this.used += txn.length;
    this.seq++;
  }

  /**
   * Reads the header and every valid transaction of the current generation.
   * A header with no copy that verifies is an error (the journal cannot be trusted); a torn or
   * missing transaction simply ends the log, as it was never acknowledged.
   */
  async read(): Promise<JournalRecord[][]> {
    this.generation = await this.readHeader();
    this.seq = 0n;
    this.used = SECTOR;
    const txns: JournalRecord[][] = [];
    const head = Buffer.alloc(TXN_HEADER);
    while (this.used + TXN_HEADER + 8 <= this.bytes) {
      await this.dev.read(head, this.start + this.used);
      if (head.readUInt32LE(0) !== TXN_MAGIC || head.readBigUInt64LE(8) !== this.generation || head.readBigUInt64LE(16) !== this.seq) break;
      const body = head.readUInt32LE(24);
      const total = alignSector(TXN_HEADER + body + 8);
      if (this.used + total > this.bytes) break;
      const txn = Buffer.alloc(total);
      await this.dev.read(txn, this.start + this.used);
      if (txn.readBigUInt64LE(TXN_HEADER + body) !== metaChecksum(txn.subarray(0, TXN_HEADER + body))) break;
      txns.push(decodeRecords(txn, head.readUInt32LE(4), body));
      this.used += total;
      this.seq++;
    }
    return txns;
  }
}

function decodeRecords(txn: Buffer, count: number, body: number): JournalRecord[] {
  const out: JournalRecord[] = [];
  let at = TXN_HEADER;
  for (let i = 0; i < count && at < TXN_HEADER + body; i++) {
    const type = txn.readUInt8(at) as RecordType;
    const len = txn.readUInt32LE(at + 4);
    const target = Number(txn.readBigUInt64LE(at + 8));
    out.push({ type, target, payload: Buffer.from(txn.subarray(at + RECORD_HEADER, at + RECORD_HEADER + len)) });
    at += RECORD_HEADER + align8(len);
  }
  return out;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

function alignSector(n: number): number {
  return Math.ceil(n / SECTOR) * SECTOR;
}
