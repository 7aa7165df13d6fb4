import fs from 'node:fs';
import { tryLock, trim, unlock } from 'fs-native-extensions';
import { checkRange, checkWritable, type BlockDevice, type WriteOptions, type WriteZeroesOptions } from './device.js';
import { DirectIo } from './direct-io.js';
import { BlockDeviceError, fromSystemError, type BlockOp } from './errors.js';
import { directAlignment, directUnsupported } from './direct-open.js';
import { sysfsBlockDir } from './sysfs.js';

/**
 * How requests reach the file. Measured on these machines: positioned
 * reads and writes on the main thread beat the libuv thread-pool hop by ~1.6x
 * for small requests served from the page cache; large requests go through the
 * pool so one of them never stalls the event loop for long.
 */
export type FileIoMode = 'auto' | 'sync' | 'async';

/** Requests up to this size go synchronously in 'auto' mode. */
const SYNC_LIMIT = 128 * 1024;
/** Zero runs are written from one shared buffer of this size, never allocated per request. */
const ZERO_CHUNK = 1024 * 1024;
/**
 * Bytes of small page-cache writes between background syncs (see wrote()).
 * Measured over 40 s of 4K random writes at QD16: with a sync every 64 MiB
 * the worst write took 0.77 s and the 99.9th percentile 18 ms; with none,
 * 1.9 s and 88 ms, since the commit's flush then had all of it to write; a
 * sync every 8 MiB cost a third of the IOPS, cleaning pages that the next
 * writes dirtied again.
 */
const WRITE_BEHIND = 64 * 1024 * 1024;
let zeroChunk: Buffer | undefined;

export interface FileOpenOptions {
  readOnly?: boolean;
  io?: FileIoMode;
  blockSize?: number;
  /**
   * Open with O_DIRECT: bypass the host page cache (qemu's cache=none). Any
   * offset and length still work; every request goes through libuv's pool
   * (`io` is ignored). Refused where the file system cannot do direct I/O.
   */
  direct?: boolean;
}

export interface FileCreateOptions {
  size: number;
  io?: FileIoMode;
  blockSize?: number;
  /** As FileOpenOptions.direct. */
  direct?: boolean;
  /** Replace an existing file instead of refusing. */
  overwrite?: boolean;
}

/**
 * A regular file or a raw block device. Regular files are created sparse.
 * An open device holds an open-file-description lock (exclusive for writers,
 * shared for readers), so two processes, or two opens in one process, can
 * never write one pool at once.
 */
export class FileDevice implements BlockDevice {
  readonly name: string;
  private unsynced = 0;
  /** The write-behind sync in flight, if any (close waits for it: its fd must not be reused under it). */
  private behind: Promise<void> | undefined;
  private behindError: NodeJS.ErrnoException | undefined;
  /** Changes only through grow(). */
  size: number;
  readonly blockSize: number;
  readonly preferredBlockSize = 4096;
  readonly discardZeroes = true;
  readonly readOnly: boolean;
  private fd: number;
  private readonly io: FileIoMode;
  private punchSupported = true;
  /** Present when the file was opened with O_DIRECT. */
  private readonly direct: DirectIo | undefined;

  private constructor(path: string, fd: number, size: number, readOnly: boolean, io: FileIoMode, blockSize: number, alignment: number | undefined) {
    this.name = path;
    this.fd = fd;
    this.size = size;
    this.readOnly = readOnly;
    this.io = io;
    this.blockSize = blockSize;
    this.direct = alignment === undefined ? undefined : new DirectIo(path, () => this.fd, alignment);
  }

  /**
   * Extends the file to `size` bytes (sparse, synced) and the device with it:
   * what a pool growing online stands on. Grow only; a block device cannot.
   */
  async grow(size: number): Promise<void> {
    if (this.readOnly) throw new BlockDeviceError('EROFS', this.name, 'write', 'device is read-only');
    if (!Number.isSafeInteger(size) || size < this.size) throw new BlockDeviceError('EINVAL', this.name, 'write', `cannot grow to ${size} bytes from ${this.size}`);
    if (this.direct && size % this.direct.alignment !== 0) throw new BlockDeviceError('EINVAL', this.name, 'write', `size ${size} is not a multiple of the direct I/O alignment ${this.direct.alignment}`);
    fs.ftruncateSync(this.fd, size);
    fs.fsyncSync(this.fd);
    this.size = size;
  }

  /** The unit direct I/O is aligned to (the logical block), or undefined for buffered I/O. */
  get directAlignment(): number | undefined {
    return this.direct?.alignment;
  }

  static create(path: string, opts: FileCreateOptions): FileDevice {
    if (!Number.isSafeInteger(opts.size) || opts.size <= 0) {
      throw new BlockDeviceError('EINVAL', path, 'open', `invalid size ${opts.size}`);
    }
    const c = fs.constants;
    // Without overwrite, O_EXCL opens only a file this call makes: a failure after the open removes it.
    const existed = (opts.direct === true || opts.overwrite === true) && fs.existsSync(path);
    let fd: number;
    try {
      fd = openFile(path, c.O_RDWR | c.O_CREAT | (opts.overwrite ? c.O_TRUNC : c.O_EXCL), opts.direct);
    } catch (err) {
      // Linux creates the file before it finds that the file system refuses O_DIRECT.
      if (opts.direct && !existed) fs.rmSync(path, { force: true });
      throw err;
    }
    let alignment: number | undefined;
    try {
      lockOrThrow(fd, path, false);
      fs.ftruncateSync(fd, opts.size);
      if (opts.direct) alignment = directAlignment(fd, path, opts.size);
    } catch (err) {
      fs.closeSync(fd);
      // A file too large for the file system (EFBIG) must not stay behind as an empty file that blocks a retry.
      if (!existed) fs.rmSync(path, { force: true });
      throw fromSystemError(err, path, 'open');
    }
    return new FileDevice(path, fd, opts.size, false, opts.io ?? 'auto', opts.blockSize ?? 512, alignment);
  }

  static open(path: string, opts: FileOpenOptions = {}): FileDevice {
    const readOnly = opts.readOnly ?? false;
    const fd = openFile(path, readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR, opts.direct);
    try {
      lockOrThrow(fd, path, readOnly);
      const st = fs.fstatSync(fd);
      const size = st.isBlockDevice() ? blockDeviceSize(st) : st.size;
      const alignment = opts.direct ? directAlignment(fd, path, size, st) : undefined;
      return new FileDevice(path, fd, size, readOnly, opts.io ?? 'auto', opts.blockSize ?? 512, alignment);
    } catch (err) {
      fs.closeSync(fd);
      throw fromSystemError(err, path, 'open');
    }
  }

  /** Bytes the host file system has allocated for the file (what `du` shows). */
  allocatedBytes(): number {
    return fs.fstatSync(this.fd).blocks * 512;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    try {
      this.checkOpen('read');
      checkRange(this, 'read', offset, buf.length);
      if (buf.length === 0) return Promise.resolve();
      if (this.direct) return this.direct.read(buf, offset);
      if (this.goesSync(buf.length)) {
        this.readSync(buf, offset);
        return Promise.resolve();
      }
    } catch (err) {
      return Promise.reject(fromSystemError(err, this.name, 'read', offset, buf.length));
    }
    return new Promise((resolve, reject) => this.readAsync(buf, offset, 0, resolve, reject));
  }

  write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    try {
      this.checkOpen('write');
      checkWritable(this, 'write', offset, buf.length);
      checkRange(this, 'write', offset, buf.length);
      if (buf.length === 0) return opts?.fua ? this.flush() : Promise.resolve();
      if (this.direct) {
        const done = this.direct.write(buf, offset);
        return opts?.fua ? done.then(() => this.flush()) : done;
      }
      this.wrote(buf.length);
      if (this.goesSync(buf.length)) {
        this.writeSync(buf, offset);
        return opts?.fua ? this.flush() : Promise.resolve();
      }
    } catch (err) {
      return Promise.reject(fromSystemError(err, this.name, 'write', offset, buf.length));
    }
    const done = new Promise<void>((resolve, reject) => this.writeAsync(buf, offset, 0, resolve, reject));
    return opts?.fua ? done.then(() => this.flush()) : done;
  }

  flush(): Promise<void> {
    this.unsynced = 0;
    return new Promise((resolve, reject) => {
      if (this.fd < 0) return reject(new BlockDeviceError('ECLOSED', this.name, 'flush', 'device is closed'));
      if (this.readOnly) return resolve();
      fs.fdatasync(this.fd, (err) => {
        // An error a write-behind sync met is this flush's: the kernel reports it once.
        const behind = this.behindError;
        this.behindError = undefined;
        if (err) return reject(fromSystemError(err, this.name, 'flush'));
        if (behind) return reject(fromSystemError(behind, this.name, 'flush'));
        resolve();
      });
    });
  }

  /**
   * Through the page cache, dirty data piles up between flushes and the
   * flush that follows must write all of it (seconds under a steady
   * random-write load, while writes to pages being written back wait).
   * Every WRITE_BEHIND bytes of small writes a sync is started in the
   * background, so the kernel writes as it goes and the next flush finds
   * little left. Large writes do not count: their pages are written back in
   * long runs, quickly, and syncing behind them cost 1 MiB writes a quarter
   * of their speed.
   */
  private wrote(length: number): void {
    if (this.direct || length > SYNC_LIMIT || (this.unsynced += length) < WRITE_BEHIND || this.behind) return;
    this.unsynced = 0;
    this.behind = new Promise((resolve) =>
      fs.fdatasync(this.fd, (err) => {
        this.behind = undefined;
        if (err) this.behindError ??= err;
        resolve();
      }),
    );
  }

  async discard(offset: number, length: number): Promise<void> {
    this.checkOpen('discard');
    checkWritable(this, 'discard', offset, length);
    checkRange(this, 'discard', offset, length);
    if (length === 0) return;
    await this.punchOrZero(offset, length, 'discard');
  }

  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    this.checkOpen('writeZeroes');
    checkWritable(this, 'writeZeroes', offset, length);
    checkRange(this, 'writeZeroes', offset, length);
    if (length === 0) return;
    if (opts?.mayUnmap) await this.punchOrZero(offset, length, 'writeZeroes');
    else await this.writeZeroRun(offset, length);
    if (opts?.fua) await this.flush();
  }

  async close(): Promise<void> {
    if (this.fd < 0) return;
    await this.behind;
    const fd = this.fd;
    this.fd = -1;
    try {
      unlock(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  private goesSync(length: number): boolean {
    return this.io === 'sync' || (this.io === 'auto' && length <= SYNC_LIMIT);
  }

  private readSync(buf: Uint8Array, offset: number): void {
    let done = 0;
    while (done < buf.length) {
      const n = fs.readSync(this.fd, buf, done, buf.length - done, offset + done);
      if (n === 0) throw new BlockDeviceError('EIO', this.name, 'read', 'unexpected end of file (was the file truncated?)', offset + done, buf.length - done);
      done += n;
    }
  }

  private writeSync(buf: Uint8Array, offset: number): void {
    let done = 0;
    while (done < buf.length) done += fs.writeSync(this.fd, buf, done, buf.length - done, offset + done);
  }

  private readAsync(buf: Uint8Array, offset: number, done: number, resolve: () => void, reject: (e: Error) => void): void {
    fs.read(this.fd, buf, done, buf.length - done, offset + done, (err, n) => {
      if (err) return reject(fromSystemError(err, this.name, 'read', offset, buf.length));
      if (n === 0) return reject(new BlockDeviceError('EIO', this.name, 'read', 'unexpected end of file (was the file truncated?)', offset + done, buf.length - done));
      if (done + n < buf.length) return this.readAsync(buf, offset, done + n, resolve, reject);
      resolve();
    });
  }

  private writeAsync(buf: Uint8Array, offset: number, done: number, resolve: () => void, reject: (e: Error) => void): void {
    fs.write(this.fd, buf, done, buf.length - done, offset + done, (err, n) => {
      if (err) return reject(fromSystemError(err, this.name, 'write', offset, buf.length));
      if (done + n < buf.length) return this.writeAsync(buf, offset, done + n, resolve, reject);
      resolve();
    });
  }

  /** Punches a hole so the host gets the space back; falls back to zeroes where the file system cannot punch. */
  private async punchOrZero(offset: number, length: number, op: BlockOp): Promise<void> {
    if (this.punchSupported) {
      try {
        if (this.direct) await this.direct.exclusive(offset, length, () => trim(this.fd, offset, length));
        else await trim(this.fd, offset, length);
        return;
      } catch (err) {
        const e = fromSystemError(err, this.name, op, offset, length);
        if (e.code !== 'ENOTSUP') throw e;
        this.punchSupported = false;
      }
    }
    await this.writeZeroRun(offset, length);
  }

  private async writeZeroRun(offset: number, length: number): Promise<void> {
    zeroChunk ??= Buffer.alloc(ZERO_CHUNK);
    for (let done = 0; done < length; done += ZERO_CHUNK) {
      const n = Math.min(ZERO_CHUNK, length - done);
      await this.write(zeroChunk.subarray(0, n), offset + done);
    }
  }

  private checkOpen(op: BlockOp): void {
    if (this.fd < 0) throw new BlockDeviceError('ECLOSED', this.name, op, 'device is closed');
  }
}

/** Opens with the given flags (plus O_DIRECT), naming the file system when it refuses direct I/O. */
function openFile(path: string, flags: number, direct: boolean | undefined): number {
  try {
    return fs.openSync(path, direct ? flags | fs.constants.O_DIRECT : flags, 0o644);
  } catch (err) {
    if (direct && (err as NodeJS.ErrnoException).code === 'EINVAL') throw directUnsupported(path);
    throw fromSystemError(err, path, 'open');
  }
}

function lockOrThrow(fd: number, path: string, shared: boolean): void {
  if (!tryLock(fd, 0, 0, { shared })) {
    throw new BlockDeviceError('EBUSY', path, 'open', 'file is locked: another process (or another open in this one) is using it');
  }
}

/** Size of a raw block device from sysfs: Node has no BLKGETSIZE64. */
function blockDeviceSize(st: fs.Stats): number {
  const sectors = fs.readFileSync(`${sysfsBlockDir(st.rdev)}/size`, 'utf8').trim();
  return Number(sectors) * 512;
}
