/**
 * Which host clusters the image's tables and data have claimed, so a cluster
 * referenced twice (damage, or a crafted loop of tables) is found. A file's
 * size is known and may be read in any order: one bit per cluster. A stream
 * is read in increasing order: the end of what was claimed suffices.
 * Compressed clusters share host clusters with each other (qemu packs them
 * byte by byte), never with anything else.
 */
export interface HostClaims {
  /** Null when free; else what claimed it first. */
  claim(at: number, length: number, compressed: boolean): string | null;
}

export function hostClaims(clusterBits: number, fileSize: number | null): HostClaims {
  if (fileSize === null) return orderedClaims();
  const clusters = Math.ceil(fileSize / 2 ** clusterBits) + 1;
  const plain = new Uint32Array(Math.ceil(clusters / 32));
  const packed = new Uint32Array(Math.ceil(clusters / 32));
  const has = (bits: Uint32Array, c: number): boolean => ((bits[c >>> 5]! >>> (c & 31)) & 1) === 1;
  const set = (bits: Uint32Array, c: number): void => {
    bits[c >>> 5]! |= 1 << (c & 31);
  };
  return {
    claim: (at, length, compressed) => {
      const first = Math.floor(at / 2 ** clusterBits);
      const end = Math.min(clusters, Math.ceil((at + length) / 2 ** clusterBits));
      for (let c = first; c < end; c++) {
        if (has(plain, c)) return 'another table or cluster';
        if (!compressed && has(packed, c)) return 'a compressed cluster';
      }
      for (let c = first; c < end; c++) set(compressed ? packed : plain, c);
      return null;
    },
  };
}

function orderedClaims(): HostClaims {
  let plainEnd = 0;
  let packedEnd = 0;
  return {
    claim: (at, length, compressed) => {
      if (at < plainEnd) return 'another table or cluster';
      if (!compressed && at < packedEnd) return 'a compressed cluster';
      if (compressed) packedEnd = Math.max(packedEnd, at + length);
      else plainEnd = at + length;
      return null;
    },
  };
}
