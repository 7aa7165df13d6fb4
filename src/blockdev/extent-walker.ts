import type { BlockDevice, Extent } from './device.js';
import { BlockDeviceError } from './errors.js';

/** How much one blockStatus call asks about: big enough to be few calls, small enough to bound one answer. */
export const STATUS_SPAN = 1024 ** 3;

export type Walkable = Pick<BlockDevice, 'name' | 'size' | 'blockStatus'>;

/**
 * Every extent of [offset, end), adjacent extents with the same flags merged.
 * One blockStatus answer may cover less than was asked (a volume stops at
 * 65,536 extents, an NBD server may answer a prefix), so the walk keeps
 * asking from where each answer stopped until the end: a caller that needs
 * the whole range cannot be handed a part of it. A device without
 * blockStatus is all data.
 */
export async function* walkExtents(dev: Walkable, offset = 0, end = dev.size, span = STATUS_SPAN): AsyncGenerator<Extent> {
  let pending: Extent | undefined;
  let pos = offset;
  while (pos < end) {
    const want = Math.min(span, end - pos);
    const extents = dev.blockStatus ? await dev.blockStatus(pos, want) : [{ offset: pos, length: want, hole: false, zero: false }];
    const start = pos;
    for (const e of extents) {
      // Answers may cover less than asked, never more: anything past the span is clipped, a gap is an error.
      if (e.offset !== pos || !(e.length > 0)) {
        throw new BlockDeviceError('EIO', dev.name, 'read', `block status answered offset ${e.offset} length ${e.length}, expected offset ${pos}`, start, want);
      }
      const length = Math.min(e.length, start + want - pos);
      if (pending && pending.zero === e.zero && pending.hole === e.hole) pending.length += length;
      else {
        if (pending) yield pending;
        pending = { offset: pos, length, hole: e.hole, zero: e.zero };
      }
      pos += length;
      if (pos === start + want) break;
    }
    if (pos === start) throw new BlockDeviceError('EIO', dev.name, 'read', 'block status gave no answer', start, want);
  }
  if (pending) yield pending;
}

/** Bytes of [offset, end) that the device holds (allocated: data or zeroes written), however many extents that takes. */
export async function allocatedBytes(dev: Walkable, offset = 0, end = dev.size): Promise<number> {
  let bytes = 0;
  for await (const e of walkExtents(dev, offset, end)) if (!e.hole) bytes += e.length;
  return bytes;
}
