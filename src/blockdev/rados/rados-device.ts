import crypto from 'node:crypto';
import { checkRange, checkWritable, type BlockDevice, type WriteOptions, type WriteZeroesOptions } from '../device.js';
import { BlockDeviceError, type BlockErrorCode, type BlockOp } from '../errors.js';
import { pieces } from '../pieces.js';
import { errnoName, RADOS_ERR } from './errno.js';

/**
 * A BlockDevice striped over RADOS objects, as RBD lays out an image: a
 * header object names the device's size, object size and a random id; data
 * object i holds bytes [i·objectSize, (i+1)·objectSize) and is named
 * `strata_data.<id>.<i as 16 hex digits>`. Objects are created by their first
 * write, so an empty device costs nothing, and the id means a device made
 * again under the same name never sees the objects of an earlier one.
 *
 * Write-behind, as a disk's volatile cache: a write resolves once librados
 * has it (librados copies the bytes), not once RADOS acknowledges it; flush()
 * waits for every write sent before it and fails if any of them failed, and
 * a FUA write waits for its own acknowledgement (RADOS acknowledges a write
 * once every replica has it). A read sent after a write sees it: reads go
 * out ordered after the writes to their object (RADOS alone would let a read
 * pass a write waiting on a degraded object). What is in flight is bounded, in
 * bytes and in operations; past the bound a write waits for room, in arrival
 * order, so that writes reach RADOS in the order they were issued.
 * Discard and write-zeroes remove whole objects and zero or truncate the
 * parts of others; both read back as zeroes.
 */

export const DEFAULT_OBJECT_SIZE = 4 * 1024 * 1024;
/** In flight at once before a write waits: enough to keep every OSD busy, small beside the cache budget. */
const MAX_UNACKED_BYTES = 32 * 1024 * 1024;
const MAX_UNACKED_OPS = 256;
const HEADER_MAGIC = 'strata-rados-device';

export interface RadosDeviceHeader {
  magic: typeof HEADER_MAGIC;
  version: 1;
  size: number;
  objectSize: number;
  id: string;
}

export function headerObject(name: string): string {
  return `strata_header.${name}`;
}

export function dataObject(id: string, index: number): string {
  return `strata_data.${id}.${index.toString(16).padStart(16, '0')}`;
}

/**
 * The object operations the device needs: a RadosIoctx in use, an in-memory
 * store with fault injection in tests. Data operations resolve with a
 * librados return value (negative errno on failure).
 */
export interface ObjectStore {
  readonly pool: string;
  read(oid: string, buf: Uint8Array, offset: number): Promise<number>;
  write(oid: string, buf: Uint8Array, offset: number): Promise<number>;
  remove(oid: string): Promise<number>;
  zero(oid: string, offset: number, length: number): Promise<number>;
  truncate(oid: string, offset: number): Promise<number>;
  readSmall(oid: string): Promise<Buffer | undefined>;
  writeSmall(oid: string, data: Uint8Array): Promise<void>;
  removeObject(oid: string): Promise<void>;
}

export interface RadosDeviceOptions {
  readOnly?: boolean;
  /** Called when an operation finds this client fenced (blocklisted after another host took the device over). */
  onFenced?: () => void;
}

export class RadosDevice implements BlockDevice {
  readonly blockSize = 512;
  readonly preferredBlockSize = 4096;
  readonly discardZeroes = true;
  readonly name: string;
  readonly readOnly: boolean;
  /** Writes sent and not yet acknowledged, each settling (never rejecting) when RADOS answers. */
  private readonly unacked = new Set<Promise<void>>();
  /** Reserved at admission, released as RADOS answers each operation. */
  private unackedBytes = 0;
  private unackedOps = 0;
  /** Requests waiting for room, first come first admitted. */
  private readonly waiting: { bytes: number; ops: number; admit: () => void }[] = [];
  /** The first failure of a write already resolved: every later flush reports it (the data is lost). */
  private lostWrite: BlockDeviceError | undefined;
  private fenced = false;
  private closed = false;

  private constructor(
    private readonly io: ObjectStore,
    private header: RadosDeviceHeader,
    private readonly deviceName: string,
    private readonly opts: RadosDeviceOptions,
  ) {
    this.name = `rados:${io.pool}/${deviceName}`;
    this.readOnly = opts.readOnly ?? false;
  }

  get size(): number {
    return this.header.size;
  }

  get objectSize(): number {
    return this.header.objectSize;
  }

  /** Makes a new, empty device; refuses a name that has a header already. */
  static async create(io: ObjectStore, name: string, size: number, objectSize = DEFAULT_OBJECT_SIZE): Promise<RadosDevice> {
    if (!Number.isSafeInteger(size) || size <= 0) throw new BlockDeviceError('EINVAL', `rados:${io.pool}/${name}`, 'open', `invalid size ${size}`);
    if (await io.readSmall(headerObject(name))) {
      throw new BlockDeviceError('EBUSY', `rados:${io.pool}/${name}`, 'open', `a device named '${name}' already exists in Ceph pool '${io.pool}'`);
    }
    const header: RadosDeviceHeader = { magic: HEADER_MAGIC, version: 1, size, objectSize, id: crypto.randomBytes(8).toString('hex') };
    await io.writeSmall(headerObject(name), Buffer.from(JSON.stringify(header)));
    return new RadosDevice(io, header, name, {});
  }

  static async open(io: ObjectStore, name: string, opts: RadosDeviceOptions = {}): Promise<RadosDevice> {
    return new RadosDevice(io, await RadosDevice.readHeader(io, name), name, opts);
  }

  static async exists(io: ObjectStore, name: string): Promise<boolean> {
    return (await io.readSmall(headerObject(name))) !== undefined;
  }

  static async readHeader(io: ObjectStore, name: string): Promise<RadosDeviceHeader> {
    const where = `rados:${io.pool}/${name}`;
    const raw = await io.readSmall(headerObject(name));
    if (raw === undefined) throw new BlockDeviceError('EINVAL', where, 'open', `no device named '${name}' in Ceph pool '${io.pool}' (object ${headerObject(name)} is missing)`);
    let h: Partial<RadosDeviceHeader>;
    try {
      h = JSON.parse(raw.toString('utf8')) as Partial<RadosDeviceHeader>;
    } catch {
      throw new BlockDeviceError('EIO', where, 'open', `header object ${headerObject(name)} is damaged (not JSON)`);
    }
    const ok =
      h.magic === HEADER_MAGIC && h.version === 1 && Number.isSafeInteger(h.size) && (h.size ?? 0) > 0 &&
      Number.isSafeInteger(h.objectSize) && (h.objectSize ?? 0) >= 4096 && typeof h.id === 'string' && /^[0-9a-f]{16}$/.test(h.id);
    if (!ok) throw new BlockDeviceError('EIO', where, 'open', `header object ${headerObject(name)} is damaged or of an unknown version`);
    return h as RadosDeviceHeader;
  }

  /** Removes every data object, then the header. */
  static async destroy(io: ObjectStore, name: string): Promise<void> {
    const header = await RadosDevice.readHeader(io, name);
    const count = Math.ceil(header.size / header.objectSize);
    await inParallel(count, 32, async (i) => {
      const ret = await io.remove(dataObject(header.id, i));
      if (ret < 0) throw new BlockDeviceError('EIO', `rados:${io.pool}/${name}`, 'discard', `removing ${dataObject(header.id, i)}: ${errnoName(ret)}`);
    });
    await io.removeObject(headerObject(name));
  }

  /** Grows the device: only the header changes, the new objects appear on their first write. */
  async grow(size: number): Promise<void> {
    if (size < this.header.size) throw new BlockDeviceError('EINVAL', this.name, 'write', `cannot shrink from ${this.header.size} to ${size}`);
    const header = { ...this.header, size };
    await this.io.writeSmall(headerObject(this.deviceName), Buffer.from(JSON.stringify(header)));
    this.header = header;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.usable('read', offset, buf.length);
    checkRange(this, 'read', offset, buf.length);
    const parts = pieces(this.header.objectSize, offset, buf.length);
    // Every part is waited for before a failure is thrown: librados writes into `buf` until it answers, and the caller reuses `buf` once this settles.
    const answers = await Promise.all(parts.map((p) => this.io.read(dataObject(this.header.id, p.chunk), buf.subarray(p.at, p.at + p.length), p.within)));
    parts.forEach((p, i) => {
      const ret = answers[i]!;
      const part = buf.subarray(p.at, p.at + p.length);
      if (ret === RADOS_ERR.ENOENT) return part.fill(0);
      this.failed(ret, 'read', offset + p.at, p.length);
      // An object ends where its last write ended: the rest reads as zeroes.
      if (ret < p.length) part.fill(0, ret);
    });
  }

  async write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    this.usable('write', offset, buf.length);
    checkRange(this, 'write', offset, buf.length);
    checkWritable(this, 'write', offset, buf.length);
    const parts = pieces(this.header.objectSize, offset, buf.length);
    await this.admit(buf.length, parts.length);
    const behind = opts?.fua !== true;
    const sent = parts.map((p) =>
      this.send(p.length, 'write', offset + p.at, this.io.write(dataObject(this.header.id, p.chunk), buf.subarray(p.at, p.at + p.length), p.within), behind),
    );
    if (!behind) await this.settle(sent, 'write', offset, buf.length);
  }

  async flush(): Promise<void> {
    this.usable('flush');
    await Promise.all([...this.unacked]);
    if (this.lostWrite) throw new BlockDeviceError(this.lostWrite.code, this.name, 'flush', `an earlier write failed: ${this.lostWrite.message}`, undefined, undefined, this.lostWrite);
    if (this.fenced) throw this.fencedError('flush');
  }

  /**
   * Tracks one operation of a request; resolves with its return value once
   * RADOS answers. A failure of one whose caller did not wait (`behind`) is
   * kept for the next flush to report.
   */
  private send(bytes: number, op: BlockOp, offset: number, request: Promise<number>, behind: boolean): Promise<number> {
    const done = request.then((ret) => {
      this.unacked.delete(tracked);
      this.release(bytes);
      if (ret < 0 && behind && this.lostWrite === undefined) {
        try {
          this.failed(ret, op, offset, bytes);
        } catch (err) {
          this.lostWrite = err as BlockDeviceError;
        }
      }
      return ret;
    });
    const tracked = done.then(() => undefined);
    this.unacked.add(tracked);
    return done;
  }

  /** Waits for the operations of one request and throws its first failure (for callers that wait: FUA, zeroing). */
  private async settle(sent: Promise<number>[], op: BlockOp, offset: number, length: number): Promise<void> {
    for (const ret of await Promise.all(sent)) this.failed(ret, op, offset, length);
  }

  /**
   * Reserves room for a request of `ops` operations moving `bytes`. A request
   * that finds others waiting waits behind them even if it would fit: a later
   * write passing an earlier one to the same place would leave the older data.
   */
  private async admit(bytes: number, ops: number): Promise<void> {
    if (this.waiting.length === 0 && this.fits(bytes, ops)) return this.reserve(bytes, ops);
    await new Promise<void>((admit) => this.waiting.push({ bytes, ops, admit }));
  }

  /** Anything fits an idle device, however large; otherwise within both bounds. */
  private fits(bytes: number, ops: number): boolean {
    return this.unackedOps === 0 || (this.unackedBytes + bytes <= MAX_UNACKED_BYTES && this.unackedOps + ops <= MAX_UNACKED_OPS);
  }

  private reserve(bytes: number, ops: number): void {
    this.unackedBytes += bytes;
    this.unackedOps += ops;
  }

  private release(bytes: number): void {
    this.unackedBytes -= bytes;
    this.unackedOps--;
    for (let next = this.waiting[0]; next !== undefined && this.fits(next.bytes, next.ops); next = this.waiting[0]) {
      this.waiting.shift();
      this.reserve(next.bytes, next.ops);
      next.admit();
    }
  }

  discard(offset: number, length: number): Promise<void> {
    return this.zeroRange('discard', offset, length);
  }

  writeZeroes(offset: number, length: number, _opts?: WriteZeroesOptions): Promise<void> {
    return this.zeroRange('writeZeroes', offset, length);
  }

  private async zeroRange(op: BlockOp, offset: number, length: number): Promise<void> {
    this.usable(op, offset, length);
    checkRange(this, op, offset, length);
    checkWritable(this, op, offset, length);
    const objectSize = this.header.objectSize;
    const parts = pieces(objectSize, offset, length);
    await this.admit(0, parts.length);
    // Zeroing waits for RADOS: it is rare, and a caller that zeroes often reads the range next.
    const sent = parts.map((p) => {
      const oid = dataObject(this.header.id, p.chunk);
      const objectEnd = Math.min(objectSize, this.header.size - p.chunk * objectSize);
      const request =
        p.within === 0 && p.length === objectEnd ? this.io.remove(oid)
        : p.within + p.length === objectEnd ? this.io.truncate(oid, p.within)
        : this.io.zero(oid, p.within, p.length);
      return this.send(0, op, offset + p.at, request, false);
    });
    await this.settle(sent, op, offset, length);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.all([...this.unacked]);
    this.closed = true;
  }

  private usable(op: BlockOp, offset?: number, length?: number): void {
    if (this.closed) throw new BlockDeviceError('ECLOSED', this.name, op, 'device is closed', offset, length);
    if (this.fenced) throw this.fencedError(op, offset, length);
  }

  private failed(ret: number, op: BlockOp, offset: number, length: number): void {
    if (ret >= 0) return;
    if (ret === RADOS_ERR.ESHUTDOWN) {
      if (!this.fenced) {
        this.fenced = true;
        this.opts.onFenced?.();
      }
      throw this.fencedError(op, offset, length);
    }
    const code: BlockErrorCode = ret === RADOS_ERR.ENOSPC || ret === RADOS_ERR.EDQUOT ? 'ENOSPC' : ret === RADOS_ERR.EROFS ? 'EROFS' : 'EIO';
    throw new BlockDeviceError(code, this.name, op, `RADOS: ${errnoName(ret)}`, offset, length);
  }

  /** Whether RADOS has refused this client (blocklisted: another host took the device over); it never serves again. */
  get isFenced(): boolean {
    return this.fenced;
  }

  private fencedError(op: BlockOp, offset?: number, length?: number): BlockDeviceError {
    return new BlockDeviceError('EIO', this.name, op, 'this host was fenced: another host took the pool over (its RADOS client is blocklisted)', offset, length);
  }
}

/** Runs `task(0 … count-1)` with at most `width` in flight; the first failure rejects. */
async function inParallel(count: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(width, count) }, worker));
}
