import { promisify } from 'node:util';
import zlib from 'node:zlib';

const inflate = promisify(zlib.inflate);
const inflateRaw = promisify(zlib.inflateRaw);
const deflate = promisify(zlib.deflate);

/** Whether `buf` starts with a zlib (RFC 1950) header: method 8 and a header checksum that divides by 31. */
function hasZlibHeader(buf: Buffer): boolean {
  return buf.length >= 2 && (buf[0]! & 0x0f) === 8 && ((buf[0]! << 8) | buf[1]!) % 31 === 0;
}

/**
 * A compressed grain's bytes, at most `limit` of them: a grain that inflates
 * to more is damage (or a bomb), and is refused before it is held whole.
 * VMware and qemu write zlib streams; a bare deflate stream, as the
 * specification's wording allows, is read too. Runs on libuv's thread pool,
 * so several grains inflate at once.
 */
export async function inflateGrain(data: Buffer, limit: number): Promise<Buffer> {
  const opts = { maxOutputLength: limit };
  return hasZlibHeader(data) ? inflate(data, opts) : inflateRaw(data, opts);
}

/** A grain compressed as VMware and qemu write it (a zlib stream). */
export function deflateGrain(grain: Buffer): Promise<Buffer> {
  return deflate(grain, { level: zlib.constants.Z_DEFAULT_COMPRESSION });
}
