import type { ByteSource } from '../byte-source.js';

/**
 * Reads that may start inside the previous one: qemu packs compressed
 * clusters byte by byte while their stated sizes round up to a sector, so
 * the next one begins before the last read ended. A forward-only source
 * cannot go back; the previous answer is kept and served from.
 */
export function cachedReads(source: ByteSource): { read(at: number, length: number): Promise<Buffer> } {
  let held: Buffer = Buffer.alloc(0);
  let heldAt = 0;
  return {
    read: async (at, length) => {
      const heldEnd = heldAt + held.length;
      let out: Buffer;
      if (at >= heldAt && at < heldEnd) {
        const head = Buffer.from(held.subarray(at - heldAt, Math.min(heldEnd, at + length)));
        out = head.length === length ? head : Buffer.concat([head, await source.read(heldEnd, at + length - heldEnd)]);
      } else out = await source.read(at, length);
      held = out;
      heldAt = at;
      return out;
    },
  };
}
