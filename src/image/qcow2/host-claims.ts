/**
 * Which host clusters the image's tables and data have claimed, so a cluster
 * referenced twice (damage, or a crafted loop of tables) is found whatever
 * order the reads come in. One bit per host cluster, in pages made as
 * claims reach them: a stream of unknown length, or an offset far past the
 * end, costs a page, not a bitmap of the whole range. Compressed clusters
 * share host clusters with each other (qemu packs them byte by byte),
 * never with anything else.
 */
export interface HostClaims {
  /** Null when free; else what claimed it first. */
  claim(at: number, length: number, compressed: boolean): string | null;
}

const PAGE_BITS = 15;

export function hostClaims(clusterBits: number): HostClaims {
  const plain = new Map<number, Uint32Array>();
  const packed = new Map<number, Uint32Array>();
  const word = (pages: Map<number, Uint32Array>, c: number, make: boolean): { page: Uint32Array; i: number } | null => {
    const key = Math.floor(c / 2 ** PAGE_BITS);
    let page = pages.get(key);
    if (!page) {
      if (!make) return null;
      page = new Uint32Array(2 ** (PAGE_BITS - 5));
      pages.set(key, page);
    }
    return { page, i: (c % 2 ** PAGE_BITS) >>> 5 };
  };
  const has = (pages: Map<number, Uint32Array>, c: number): boolean => {
    const w = word(pages, c, false);
    return w !== null && ((w.page[w.i]! >>> (c & 31)) & 1) === 1;
  };
  const set = (pages: Map<number, Uint32Array>, c: number): void => {
    const w = word(pages, c, true)!;
    w.page[w.i]! |= 1 << (c & 31);
  };
  return {
    claim: (at, length, compressed) => {
      const first = Math.floor(at / 2 ** clusterBits);
      const end = Math.ceil((at + length) / 2 ** clusterBits);
      for (let c = first; c < end; c++) {
        if (has(plain, c)) return 'another table or cluster';
        if (!compressed && has(packed, c)) return 'a compressed cluster';
      }
      for (let c = first; c < end; c++) set(compressed ? packed : plain, c);
      return null;
    },
  };
}
