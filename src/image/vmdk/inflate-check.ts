import { fail, type Extent } from './extent.js';
import { inflateGrain } from './grain-codec.js';

/** Compressed bytes one grain may take: deflate grows incompressible data by a few bytes per 16 KiB, qemu allows twice the grain. */
export const maxCompressed = (e: Extent): number => 2 * e.grainBytes;

/** The grain for `lba` inflated, or an ImageFormatError naming the grain's place when it is not a deflate stream or holds more than a grain. */
export function inflateAt(e: Extent, data: Buffer, lba: number, at: number): Buffer {
  try {
    return inflateGrain(data, e.grainBytes);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') throw fail(e, at, `the compressed grain for LBA ${lba} inflates to more than a grain (${e.grainBytes} bytes)`);
    throw fail(e, at, `the compressed grain for LBA ${lba} does not inflate (${(err as Error).message})`);
  }
}
