import type { BlockDevice, Extent, Redundancy, WriteOptions, WriteZeroesOptions } from './device.js';

/**
 * The base of a device that wraps another and changes only some of its
 * behaviour (fault injection, a test's reopenable view, a member wrapper).
 * Everything it does not override goes to the inner device, the optional
 * hooks included: a wrapper that forgot `blockStatus` would turn a thin
 * volume into all data, one that forgot `redundancy` would switch off
 * checksum-driven self-heal above a RAID array, and neither shows in a test
 * of reads and writes.
 */
export class PassThroughDevice implements BlockDevice {
  /** Present exactly when the inner device has it. */
  readonly blockStatus?: (offset: number, length: number) => Promise<Extent[]>;

  constructor(readonly inner: BlockDevice) {
    if (inner.blockStatus) this.blockStatus = (offset, length) => this.status(offset, length);
  }

  get name(): string {
    return this.inner.name;
  }

  get size(): number {
    return this.inner.size;
  }

  get blockSize(): number {
    return this.inner.blockSize;
  }

  get preferredBlockSize(): number {
    return this.inner.preferredBlockSize;
  }

  get discardZeroes(): boolean {
    return this.inner.discardZeroes;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  get redundancy(): Redundancy | undefined {
    return this.inner.redundancy;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(buf, offset);
  }

  write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    return this.inner.write(buf, offset, opts);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  discard(offset: number, length: number): Promise<void> {
    return this.inner.discard(offset, length);
  }

  writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    return this.inner.writeZeroes(offset, length, opts);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** What `blockStatus` answers; called only when the inner device has one. */
  protected status(offset: number, length: number): Promise<Extent[]> {
    return this.inner.blockStatus!(offset, length);
  }
}
