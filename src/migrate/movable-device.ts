import type { BlockDevice, Extent, Redundancy, WriteOptions, WriteZeroesOptions } from '../blockdev/index.js';
import type { DepthRun } from '../nbd/block-status.js';

type DepthReporting = { allocationDepth(offset: number, length: number): Promise<DepthRun[]> };

const reportsDepth = (d: BlockDevice): d is BlockDevice & DepthReporting => typeof (d as Partial<DepthReporting>).allocationDepth === 'function';

/**
 * The device an export serves a volume through, which can be changed under
 * its connections: a migration puts a mirror between the export and the
 * volume (`interpose`), takes it away again (`restore`), or, at the pivot,
 * moves the export onto the copy in another pool (`moveTo`) with requests
 * held (`hold`) so that none is half on one and half on the other. Clients
 * keep their connections and never see the change.
 */
export class MovableDevice implements BlockDevice {
  private base: BlockDevice;
  private current: BlockDevice;
  private inflight = 0;
  private gate: Promise<void> | undefined;
  private drained: (() => void) | undefined;

  /** qemu:allocation-depth of the volume it is on, when volumes report it (a pool volume does). */
  readonly allocationDepth?: (offset: number, length: number) => Promise<DepthRun[]>;

  constructor(device: BlockDevice) {
    this.base = device;
    this.current = device;
    if (reportsDepth(device)) this.allocationDepth = (offset, length) => this.run(() => (reportsDepth(this.base) ? this.base.allocationDepth(offset, length) : Promise.resolve([{ offset, length, depth: 1 }])));
  }

  /** The volume under any wrapper: where the data lives now. */
  get volume(): BlockDevice {
    return this.base;
  }

  get name(): string {
    return this.current.name;
  }
  get size(): number {
    return this.current.size;
  }
  get blockSize(): number {
    return this.current.blockSize;
  }
  get preferredBlockSize(): number {
    return this.current.preferredBlockSize;
  }
  get discardZeroes(): boolean {
    return this.current.discardZeroes;
  }
  get readOnly(): boolean {
    return this.current.readOnly;
  }
  get redundancy(): Redundancy | undefined {
    return this.current.redundancy;
  }

  /** A wrapper (a mirror) is between the export and the volume now. */
  get interposed(): boolean {
    return this.current !== this.base;
  }

  /** Puts `wrap(volume)` between the export and the volume; returns it. One at a time: a second mirror would hide the first. */
  interpose<D extends BlockDevice>(wrap: (volume: BlockDevice) => D): D {
    if (this.current !== this.base) throw new Error(`${this.base.name} is being mirrored already (a migration or a push runs on it)`);
    const d = wrap(this.base);
    this.current = d;
    return d;
  }

  /** Takes any wrapper away: requests go straight to the volume again. */
  restore(): void {
    this.current = this.base;
  }

  /**
   * Holds new requests and resolves once none is in flight; the returned
   * function lets them go. Requests held meanwhile run on whatever the
   * device is when released (the target, after a pivot).
   */
  async hold(): Promise<() => void> {
    while (this.gate) await this.gate;
    let open!: () => void;
    this.gate = new Promise<void>((r) => (open = r));
    if (this.inflight > 0) await new Promise<void>((r) => (this.drained = r));
    return () => {
      this.gate = undefined;
      open();
    };
  }

  /** Moves the export onto `device` (call holding requests); returns the volume it was on, for the caller to close. */
  moveTo(device: BlockDevice): BlockDevice {
    if (device.size !== this.base.size) throw new Error(`${device.name} (${device.size} bytes) is not the size of ${this.base.name} (${this.base.size} bytes)`);
    const old = this.base;
    this.base = device;
    this.current = device;
    return old;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.run((d) => d.read(buf, offset));
  }
  write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    return this.run((d) => d.write(buf, offset, opts));
  }
  flush(): Promise<void> {
    return this.run((d) => d.flush());
  }
  discard(offset: number, length: number): Promise<void> {
    return this.run((d) => d.discard(offset, length));
  }
  writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    return this.run((d) => d.writeZeroes(offset, length, opts));
  }
  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.run((d) => (d.blockStatus ? d.blockStatus(offset, length) : Promise.resolve([{ offset, length, hole: false, zero: false }])));
  }

  async close(): Promise<void> {
    await this.base.close();
  }

  private run<T>(op: (d: BlockDevice) => Promise<T>): Promise<T> {
    if (this.gate) return this.gate.then(() => this.run(op));
    this.inflight++;
    let p: Promise<T>;
    try {
      p = op(this.current);
    } catch (err) {
      this.exit();
      throw err;
    }
    return p.finally(() => this.exit());
  }

  private exit(): void {
    if (--this.inflight === 0 && this.drained) {
      const d = this.drained;
      this.drained = undefined;
      d();
    }
  }
}
