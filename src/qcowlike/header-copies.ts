import type { BlockDevice } from '../blockdev/index.js';
import { metaChecksum } from './checksum.js';
import { COPY_CLUSTERS, HEADER_BYTES, INCOMPAT_COPIES, MAGIC, decodeHeader, encodeHeader, type PoolHeader } from './header.js';

/**
 * The header and its copies (docs/FORMAT.md): the primary at byte 0, a copy
 * in the second sector of cluster 0 (every pool has that sector to spare),
 * and, when the copies region ends the device, a copy in the device's last
 * sector, far from the other two. Each is found without the others: a reader
 * cannot know the cluster size before it has a header that verifies.
 */
export const HEADER_COPY_AT = HEADER_BYTES;

/** The device's last whole sector. */
export function lastSector(deviceSize: number): number {
  return Math.floor(deviceSize / HEADER_BYTES) * HEADER_BYTES - HEADER_BYTES;
}

/** Where this pool keeps header copies, the primary first. */
export function headerOffsets(h: PoolHeader, deviceSize: number): number[] {
  if (!(h.incompat & INCOMPAT_COPIES)) return [0];
  const atEnd = h.copiesStart + COPY_CLUSTERS === Math.floor(deviceSize / h.clusterSize);
  return atEnd ? [0, HEADER_COPY_AT, lastSector(deviceSize)] : [0, HEADER_COPY_AT];
}

export interface HeaderFound {
  header: PoolHeader;
  /** Copies that do not hold the header in use (damaged, or from before a change): rewrite them. */
  bad: Array<{ offset: number; why: string }>;
  /**
   * Copies that differ only by the shared-maps bit: a power loss between the
   * writes that set it (copies first, then sector 0). Not damage: rewritten
   * from the header in use without a report.
   */
  stale: number[];
}

function sealed(b: Buffer): boolean {
  return b.subarray(0, 8).equals(MAGIC) && b.readBigUInt64LE(HEADER_BYTES - 8) === metaChecksum(b.subarray(0, HEADER_BYTES - 8));
}

/**
 * The first copy that verifies, decoded (an unknown feature in it is still
 * refused); when none does, the primary's own error.
 */
export async function readHeader(dev: BlockDevice): Promise<HeaderFound> {
  const candidates = [0, HEADER_COPY_AT, lastSector(dev.size)].filter((o, i, all) => o >= 0 && o + HEADER_BYTES <= dev.size && all.indexOf(o) === i);
  const raws = new Map<number, Buffer>();
  const readAt = async (offset: number): Promise<Buffer | undefined> => {
    const b = Buffer.alloc(HEADER_BYTES);
    try {
      await dev.read(b, offset);
    } catch {
      return undefined;
    }
    raws.set(offset, b);
    return b;
  };
  let chosen: { offset: number; raw: Buffer; header: PoolHeader } | undefined;
  for (const offset of candidates) {
    const raw = await readAt(offset);
    if (!raw || !sealed(raw)) continue;
    const header = decodeHeader(raw, dev.name, dev.size, offset);
    // A copy counts only where its own header puts one: the last sector of a pool without a copy there is data.
    if (!headerOffsets(header, dev.size).includes(offset)) continue;
    chosen = { offset, raw, header };
    break;
  }
  if (!chosen) {
    const primary = raws.get(0) ?? Buffer.alloc(HEADER_BYTES);
    decodeHeader(primary, dev.name, dev.size);
    throw new Error(`internal: header at offset 0 neither verifies nor fails`);
  }
  const header = chosen.header;
  const bad: HeaderFound['bad'] = [];
  const stale: number[] = [];
  for (const offset of headerOffsets(header, dev.size)) {
    const raw = raws.get(offset) ?? (await readAt(offset));
    if (raw?.equals(chosen.raw)) continue;
    if (raw && sealed(raw) && sameButShared(raw, chosen.raw)) {
      stale.push(offset);
      continue;
    }
    bad.push({ offset, why: raw && sealed(raw) ? 'differs from the header in use' : 'checksum mismatch' });
  }
  return { header, bad, stale };
}

/** Two sealed headers equal but for incompatible bit 3 (byte 16, 0x08) and so their hash. */
function sameButShared(a: Buffer, b: Buffer): boolean {
  const x = Buffer.from(a.subarray(0, HEADER_BYTES - 8));
  const y = Buffer.from(b.subarray(0, HEADER_BYTES - 8));
  x[16] = x[16]! & ~0x08;
  y[16] = y[16]! & ~0x08;
  return x.equals(y);
}

/** Writes the header to every place this pool keeps it (or only `offsets`). */
export async function writeHeader(dev: BlockDevice, h: PoolHeader, offsets = headerOffsets(h, dev.size)): Promise<void> {
  const b = encodeHeader(h);
  await Promise.all(offsets.map((o) => dev.write(b, o)));
}
