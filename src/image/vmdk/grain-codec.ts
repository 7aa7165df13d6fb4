import { promisify } from 'node:util';
import zlib from 'node:zlib';

const deflate = promisify(zlib.deflate);

/** Whether `buf` starts with a zlib (RFC 1950) header: method 8 and a header checksum that divides by 31. */
function hasZlibHeader(buf: Buffer): boolean {
  return buf.length >= 2 && (buf[0]! & 0x0f) === 8 && ((buf[0]! << 8) | buf[1]!) % 31 === 0;
}

/**
 * A compressed grain's bytes, at most `limit` of them: a grain that inflates
 * to more is damage (or a bomb), and is refused before it is held whole.
 * VMware and qemu write zlib streams; a bare deflate stream, as the
 * specification's wording allows, is read too. Inflated here rather than on
 * libuv's pool: a 64 KiB grain inflates in a tenth of a millisecond, less
 * than a trip through the pool costs.
 */
export function inflateGrain(data: Buffer, limit: number): Buffer {
  const opts = { maxOutputLength: limit };
  return hasZlibHeader(data) ? zlib.inflateSync(data, opts) : zlib.inflateRawSync(data, opts);
}

/** A grain compressed as VMware and qemu write it (a zlib stream), on libuv's pool: deflating takes a hundred times longer than inflating, so several grains compress at once. */
export function deflateGrain(grain: Buffer): Promise<Buffer> {
  // One output chunk holds the whole compressed grain (zlib's bound for data that does not compress): the default 16 KiB chunks cost a trip through the pool and a copy each, on the one JS thread.
  return deflate(grain, { level: zlib.constants.Z_DEFAULT_COMPRESSION, chunkSize: deflateBound(grain.length) });
}

/** zlib's deflateBound for a zlib stream of `n` bytes, rounded up: what one grain can compress to at worst. */
function deflateBound(n: number): number {
  return Math.max(zlib.constants.Z_MIN_CHUNK, n + (n >> 12) + (n >> 14) + (n >> 25) + 64);
}
