import { checkRange, checkWritable, type BlockDevice, type WriteOptions, type WriteZeroesOptions } from './device.js';
import { BlockDeviceError } from './errors.js';
import { pieces } from './pieces.js';

/** Pages of 64 KiB: small enough that sparse use stays sparse, large enough that a map lookup per page is cheap. */
const PAGE = 64 * 1024;

export interface MemoryDeviceOptions {
  size: number;
  blockSize?: number;
  name?: string;
}

/** A sparse in-memory device: memory is held only for pages that were written. */
export class MemoryDevice implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly blockSize: number;
  readonly preferredBlockSize = PAGE;
  readonly discardZeroes = true;
  readonly readOnly = false;
  private readonly pages = new Map<number, Buffer>();
  private closed = false;

  constructor(opts: MemoryDeviceOptions) {
    if (!Number.isSafeInteger(opts.size) || opts.size < 0) throw new BlockDeviceError('EINVAL', opts.name ?? 'memory', 'open', `invalid size ${opts.size}`);
    this.size = opts.size;
    this.blockSize = opts.blockSize ?? 512;
    this.name = opts.name ?? 'memory';
  }

  /** Bytes of memory held by written pages. */
  get allocatedBytes(): number {
    return this.pages.size * PAGE;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.readSync(buf, offset);
  }

  readSync(buf: Uint8Array, offset: number): void {
    this.checkOpen('read');
    checkRange(this, 'read', offset, buf.length);
    for (const { chunk, within, length: n, at } of pieces(PAGE, offset, buf.length)) {
      const page = this.pages.get(chunk);
      if (page) buf.set(page.subarray(within, within + n), at);
      else buf.fill(0, at, at + n);
    }
  }

  async write(buf: Uint8Array, offset: number, _opts?: WriteOptions): Promise<void> {
    this.writeSync(buf, offset);
  }

  writeSync(buf: Uint8Array, offset: number): void {
    this.checkOpen('write');
    checkWritable(this, 'write', offset, buf.length);
    checkRange(this, 'write', offset, buf.length);
    for (const { chunk, within, length: n, at } of pieces(PAGE, offset, buf.length)) {
      let page = this.pages.get(chunk);
      if (!page) {
        page = Buffer.alloc(Math.min(PAGE, this.size - chunk * PAGE));
        this.pages.set(chunk, page);
      }
      page.set(buf.subarray(at, at + n), within);
    }
  }

  async flush(): Promise<void> {
    this.checkOpen('flush');
  }

  async discard(offset: number, length: number): Promise<void> {
    this.checkOpen('discard');
    checkWritable(this, 'discard', offset, length);
    checkRange(this, 'discard', offset, length);
    this.zeroRange(offset, length);
  }

  async writeZeroes(offset: number, length: number, _opts?: WriteZeroesOptions): Promise<void> {
    this.checkOpen('writeZeroes');
    checkWritable(this, 'writeZeroes', offset, length);
    checkRange(this, 'writeZeroes', offset, length);
    this.zeroRange(offset, length);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.pages.clear();
  }

  private zeroRange(offset: number, length: number): void {
    for (const { chunk, within, length: n } of pieces(PAGE, offset, length)) {
      const page = this.pages.get(chunk);
      if (page) {
        if (within === 0 && n === page.length) this.pages.delete(chunk);
        else page.fill(0, within, within + n);
      }
    }
  }

  private checkOpen(op: 'read' | 'write' | 'flush' | 'discard' | 'writeZeroes'): void {
    if (this.closed) throw new BlockDeviceError('ECLOSED', this.name, op, 'device is closed');
  }
}
