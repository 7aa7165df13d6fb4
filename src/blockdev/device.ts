import { BlockDeviceError, type BlockOp } from './errors.js';

export interface WriteOptions {
  /** Force unit access: the write is durable when the promise resolves. */
  fua?: boolean;
}

export interface WriteZeroesOptions extends WriteOptions {
  /**
   * The device may deallocate the range instead of writing zeroes (NBD's
   * WRITE_ZEROES without NO_HOLE). Reads return zeroes either way.
   */
  mayUnmap?: boolean;
}

/** One run of a block-status answer, as NBD's base:allocation reports it. */
export interface Extent {
  offset: number;
  length: number;
  /** Not allocated in this device (thin): reads come from a lower layer or are zero. */
  hole: boolean;
  /** Known to read as zeroes. */
  zero: boolean;
}

/**
 * Redundancy that a device below a checksumming layer can offer (RAID 1/5/6/10).
 * When the layer above finds a checksum mismatch it reads the other copies of
 * the range in turn, and hands the one that verifies back so every copy that
 * differs is rewritten.
 */
export interface Redundancy {
  /**
   * True when the copies are whole replicas (RAID 1/10): a copy the normal
   * read does not pick is then checked only if someone reads it, so a
   * checksummed walk reads every one. Parity reconstructions are not: a bad
   * data block shows on the normal read, bad parity to scrub.
   */
  readonly mirrored?: boolean;
  /** How many distinct ways the range can be read: mirror copies or parity reconstructions. 1 = no redundancy. */
  copies(offset: number, length: number): number;
  /** Reads the range by way `copy` (0 is the normal path; 1 … copies-1 the alternatives). */
  readCopy(buf: Uint8Array, offset: number, copy: number): Promise<void>;
  /**
   * `good` is verified correct for the range: rewrite every copy that differs.
   * Resolves to how many members were repaired. With `defer` (the reader holds
   * a read-only open), or on a read-only device, nothing is written: the copies
   * that differ are recorded as *pending* repairs, which the device reports
   * and a later read-write open carries out, and it resolves to 0.
   */
  repair(good: Uint8Array, offset: number, opts?: RepairOptions): Promise<number>;
}

export interface RepairOptions {
  /** Record the repair as pending instead of writing (a read-only open above a writable device). */
  defer?: boolean;
}

/**
 * The contract every layer from a file up to a RAID array keeps.
 *
 * - Offsets and lengths are byte counts within [0, size). An access outside
 *   that range rejects with a BlockDeviceError of code 'ERANGE', never a short
 *   read or write.
 * - A write that resolved is visible to every read issued after it resolved.
 *   It is durable only once a later flush() resolves, or at once with `fua`.
 * - Requests that overlap while both are in flight have no defined order; the
 *   caller orders them (a real disk gives no more).
 * - discard() may drop data; `discardZeroes` says whether reads of a
 *   discarded range then return zeroes (true) or unspecified old data (false).
 * - writeZeroes() always reads back as zeroes.
 * - `blockSize` is the atomic unit: after a power loss a write is torn at no
 *   finer grain than this. Any byte offset is accepted; aligned I/O is faster.
 * - Errors are BlockDeviceError with an errno-style code.
 * - The buffer passed to write() may be reused by the caller once it resolves;
 *   the buffer passed to read() is filled completely before it resolves.
 */
export interface BlockDevice {
  /** Human name used in error messages: a path, "memory", "raid5:pool0". */
  readonly name: string;
  readonly size: number;
  readonly blockSize: number;
  readonly preferredBlockSize: number;
  readonly discardZeroes: boolean;
  readonly readOnly: boolean;
  read(buf: Uint8Array, offset: number): Promise<void>;
  write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void>;
  flush(): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void>;
  close(): Promise<void>;
  /** Which parts of the range are allocated or known zero; devices that cannot tell omit it (all data). */
  blockStatus?(offset: number, length: number): Promise<Extent[]>;
  /** Present when the device can supply another copy of a range (see Redundancy). */
  readonly redundancy?: Redundancy;
}

/** Rejects out-of-range or malformed requests with the error the contract names. */
export function checkRange(dev: Pick<BlockDevice, 'name' | 'size'>, op: BlockOp, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new BlockDeviceError('EINVAL', dev.name, op, 'offset and length must be non-negative integers', offset, length);
  }
  if (offset + length > dev.size) {
    throw new BlockDeviceError('ERANGE', dev.name, op, `beyond the end of the device (size ${dev.size})`, offset, length);
  }
}

export function checkWritable(dev: Pick<BlockDevice, 'name' | 'readOnly'>, op: BlockOp, offset: number, length: number): void {
  if (dev.readOnly) throw new BlockDeviceError('EROFS', dev.name, op, 'device is read-only', offset, length);
}
