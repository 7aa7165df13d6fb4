import { MemoryDevice, type BlockDevice, type Extent, type WriteOptions, type WriteZeroesOptions } from '../blockdev/index.js';

const PAGE = 64 * 1024;

/**
 * A throwaway in-memory export (`strata serve --memory SIZE`) that knows its
 * holes: pages never written, or zeroed or trimmed whole, are reported as
 * hole+zero, so clients see a thin disk end to end (qemu-img map, nbdinfo --map).
 */
export class SparseMemoryDevice implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly blockSize = 512;
  readonly preferredBlockSize = 4096;
  readonly discardZeroes = true;
  readonly readOnly = false;
  private readonly mem: MemoryDevice;
  private readonly allocated = new Set<number>();

  constructor(size: number, name = 'memory') {
    this.mem = new MemoryDevice({ size, name });
    this.name = name;
    this.size = size;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.mem.read(buf, offset);
  }

  async write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    await this.mem.write(buf, offset, opts);
    for (let p = Math.floor(offset / PAGE); p * PAGE < offset + buf.length; p++) this.allocated.add(p);
  }

  flush(): Promise<void> {
    return this.mem.flush();
  }

  async discard(offset: number, length: number): Promise<void> {
    await this.mem.discard(offset, length);
    this.unmapWhole(offset, length);
  }

  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    await this.mem.writeZeroes(offset, length, opts);
    if (opts?.mayUnmap) this.unmapWhole(offset, length);
  }

  close(): Promise<void> {
    this.allocated.clear();
    return this.mem.close();
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const extents: Extent[] = [];
    const end = Math.min(offset + length, this.size);
    let pos = offset;
    while (pos < end) {
      const page = Math.floor(pos / PAGE);
      const hole = !this.allocated.has(page);
      const next = Math.min((page + 1) * PAGE, end);
      const last = extents[extents.length - 1];
      if (last && last.hole === hole) last.length += next - pos;
      else extents.push({ offset: pos, length: next - pos, hole, zero: hole });
      pos = next;
    }
    return extents;
  }

  private unmapWhole(offset: number, length: number): void {
    const first = Math.ceil(offset / PAGE);
    const end = offset + length === this.size ? Math.ceil(this.size / PAGE) : Math.floor((offset + length) / PAGE);
    for (let p = first; p < end; p++) this.allocated.delete(p);
  }
}
