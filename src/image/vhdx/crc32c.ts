/** CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries. */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32c(buf: Buffer): number {
  let crc = 0xffffffff;
  for (let i = 0; i < buf.length; i++) crc = TABLE[(crc ^ buf[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** The CRC-32C of a structure whose own 4-byte checksum field, at `at`, counts as zero. */
export function structureChecksum(buf: Buffer, at = 4): number {
  const copy = Buffer.from(buf);
  copy.fill(0, at, at + 4);
  return crc32c(copy);
}
