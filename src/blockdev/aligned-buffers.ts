/**
 * Bounce memory for direct I/O. O_DIRECT needs the buffer's address aligned to
 * the device's logical block (512 or 4096), and nothing Node allocates
 * promises that: Buffer.alloc, allocUnsafeSlow and new ArrayBuffer all come
 * back misaligned often enough for the kernel to answer EINVAL. A
 * WebAssembly.Memory's backing store is page-aligned (64 KiB pages), so slots
 * carved from one at multiples of 4096 are aligned for every device.
 *
 * The memory has a fixed size and is never grown: growing detaches the
 * ArrayBuffer, and every slot view would go stale under I/O in flight. So the
 * total is bounded; a request that finds every slot taken waits, first come
 * first served.
 */

const WASM_PAGE = 65536;

/** The one WebAssembly call made here (the project's TypeScript libs do not declare the API). */
type MemoryConstructor = new (desc: { initial: number; maximum: number }) => { readonly buffer: ArrayBuffer };
const WasmMemory = (globalThis as unknown as { WebAssembly: { Memory: MemoryConstructor } }).WebAssembly.Memory;

/** Page-aligned memory of at least `bytes` that can never grow (maximum = initial), so no view of it is ever detached. */
export function alignedMemory(bytes: number): ArrayBuffer {
  const pages = Math.ceil(bytes / WASM_PAGE);
  return new WasmMemory({ initial: pages, maximum: pages }).buffer;
}
/** Every slot starts at a multiple of this: the largest logical block we meet. */
export const SLOT_ALIGN = 4096;

/** A fixed number of equal slots; take() waits in FIFO order when none is free. */
export class SlotPool {
  readonly slotSize: number;
  readonly slots: number;
  private readonly free: Buffer[] = [];
  private readonly waiting: ((slot: Buffer) => void)[] = [];

  constructor(memory: ArrayBuffer, start: number, slotSize: number, slots: number) {
    if (start % SLOT_ALIGN !== 0 || slotSize % SLOT_ALIGN !== 0) throw new Error('slots must start at multiples of 4096');
    if (start + slotSize * slots > memory.byteLength) throw new Error('slots do not fit in the memory');
    this.slotSize = slotSize;
    this.slots = slots;
    for (let i = 0; i < slots; i++) this.free.push(Buffer.from(memory, start + i * slotSize, slotSize));
  }

  /** Slots free right now. */
  get available(): number {
    return this.free.length;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.waiting.length;
  }

  /** A whole slot; the caller must give() it back, also when its I/O fails. */
  take(): Promise<Buffer> {
    const slot = this.tryTake();
    if (slot) return Promise.resolve(slot);
    return new Promise((grant) => this.waiting.push(grant));
  }

  /** A slot now, or undefined when none is free or others wait for one (they keep their turn). */
  tryTake(): Buffer | undefined {
    return this.waiting.length === 0 ? this.free.pop() : undefined;
  }

  give(slot: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(slot);
    else this.free.push(slot);
  }
}

export interface AlignedBuffersOptions {
  /** Slot size for small requests (a 4K random read must not hold a large slot). */
  smallSize: number;
  smallSlots: number;
  /** Slot size for large requests; longer ones are split into pieces of this size. */
  largeSize: number;
  largeSlots: number;
}

/**
 * 256 small slots of 64 KiB and 16 large ones of 1 MiB: 32 MiB per process,
 * shared by every direct device. 256 small requests in flight is more than
 * the libuv pool runs at once, and 1 MiB pieces write at the disk's streaming
 * rate (measured: 2.6 GB/s).
 */
const DEFAULTS: AlignedBuffersOptions = { smallSize: 64 * 1024, smallSlots: 256, largeSize: 1024 * 1024, largeSlots: 16 };

export class AlignedBuffers {
  readonly small: SlotPool;
  readonly large: SlotPool;

  constructor(opts: AlignedBuffersOptions = DEFAULTS) {
    const smallBytes = opts.smallSize * opts.smallSlots;
    const bytes = smallBytes + opts.largeSize * opts.largeSlots;
    const memory = alignedMemory(bytes);
    this.small = new SlotPool(memory, 0, opts.smallSize, opts.smallSlots);
    this.large = new SlotPool(memory, smallBytes, opts.largeSize, opts.largeSlots);
  }

  /** The pool whose slots hold a piece of `length` aligned bytes, or the large one (pieces are cut to its size). */
  poolFor(length: number): SlotPool {
    return length <= this.small.slotSize ? this.small : this.large;
  }
}

let shared: AlignedBuffers | undefined;

/** The process's bounce memory, made on first use by a direct device. */
export function sharedAlignedBuffers(): AlignedBuffers {
  shared ??= new AlignedBuffers();
  return shared;
}
