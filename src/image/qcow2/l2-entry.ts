/**
 * What one L2 entry maps its guest cluster to. Entries are read as two
 * 32-bit halves: the offsets fit in 56 bits, more than a double holds
 * exactly only past 2^53, which no real file reaches (checked by the caller
 * against the file's size).
 */
export type L2Mapping =
  | { kind: 'unallocated' }
  | { kind: 'zero' }
  | { kind: 'data'; host: number }
  | { kind: 'compressed'; host: number; bytes: number }
  /** Extended L2: per subcluster, a bit saying it is stored at host + i * subcluster size, and one saying it reads zeroes. */
  | { kind: 'subclusters'; host: number; allocated: number; zeroes: number }
  | { kind: 'invalid'; why: string };

const TWO32 = 2 ** 32;
const COMPRESSED = 0x40000000;
/** Bits 56-61 of a standard descriptor, in the high half. */
const RESERVED_HIGH = 0x3f000000;
/** Bits 1-8 of a standard descriptor. */
const RESERVED_LOW = 0x1fe;

/** The L2 table's cluster from an L1 entry; null when the entry maps nothing; a string says what is wrong. */
export function l1Target(hi: number, lo: number): number | null | string {
  if ((hi & 0x7f000000) !== 0 || (lo & 0x1ff) !== 0) return `reserved bits are set in L1 entry 0x${hi.toString(16).padStart(8, '0')}${lo.toString(16).padStart(8, '0')}`;
  const offset = (hi & 0x00ffffff) * TWO32 + lo;
  return offset === 0 ? null : offset;
}

/** Decodes one L2 entry (its first 64 bits, and for extended L2 its subcluster bitmap) for clusters of 2^clusterBits bytes. */
export function decodeL2(hi: number, lo: number, clusterBits: number, bitmap: { allocated: number; zeroes: number } | null): L2Mapping {
  if (hi & COMPRESSED) {
    if (bitmap !== null && (bitmap.allocated !== 0 || bitmap.zeroes !== 0)) return { kind: 'invalid', why: 'a compressed cluster has a subcluster bitmap' };
    // Bits 0..x-1 are the byte offset, x..61 the count of further 512-byte sectors, with x = 62 - (cluster_bits - 8).
    const highOffsetBits = 62 - (clusterBits - 8) - 32;
    const host = (hi & (2 ** highOffsetBits - 1)) * TWO32 + lo;
    const sectors = ((hi & 0x3fffffff) >>> highOffsetBits) + 1;
    return { kind: 'compressed', host, bytes: sectors * 512 - (host % 512) };
  }
  if ((hi & RESERVED_HIGH) !== 0 || (lo & RESERVED_LOW) !== 0) return { kind: 'invalid', why: 'reserved bits are set' };
  const host = (hi & 0x00ffffff) * TWO32 + (lo - (lo & 0x1ff));
  if (bitmap !== null) {
    if (lo & 1) return { kind: 'invalid', why: 'the zero flag is set in an extended L2 entry' };
    if ((bitmap.allocated & bitmap.zeroes) !== 0) return { kind: 'invalid', why: 'a subcluster is marked both allocated and zero' };
    if (host === 0 && bitmap.allocated !== 0) return { kind: 'invalid', why: 'subclusters are allocated in a cluster with no host offset' };
    if (bitmap.allocated === 0 && bitmap.zeroes === 0) return { kind: 'unallocated' };
    return { kind: 'subclusters', host, allocated: bitmap.allocated, zeroes: bitmap.zeroes };
  }
  // The zero flag wins over a host offset: the cluster is preallocated but reads zeroes.
  if (lo & 1) return { kind: 'zero' };
  return host === 0 ? { kind: 'unallocated' } : { kind: 'data', host };
}
