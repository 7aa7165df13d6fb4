import { ImageFormatError, UnsupportedImageError } from '../errors.js';
import { FILE_PARAMETERS, guidText, LOGICAL_SECTOR_SIZE, PARENT_LOCATOR, PHYSICAL_SECTOR_SIZE, VIRTUAL_DISK_ID, VIRTUAL_DISK_SIZE } from './guid.js';
import { KIB, MIB } from './header-section.js';
import { parentPath } from './parent-locator.js';

export interface VhdxMetadata {
  blockSize: number;
  /** LeaveBlocksAllocated: a fixed VHDX, whose blocks stay present. */
  fixed: boolean;
  virtualSize: number;
  logicalSectorSize: number;
}

const KNOWN = new Set([FILE_PARAMETERS, VIRTUAL_DISK_SIZE, VIRTUAL_DISK_ID, LOGICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE, PARENT_LOCATOR]);
/** 64 TiB, the format's limit. */
const MAX_VIRTUAL_SIZE = 64 * 1024 * 1024 * MIB;

/** The metadata region (`region`, read whole, found at file offset `at`): the items a reader needs, each checked. */
export function parseMetadata(name: string, region: Buffer, at: number): VhdxMetadata {
  if (region.toString('latin1', 0, 8) !== 'metadata') throw new ImageFormatError(name, at, 'no metadata table ("metadata") at the start of the metadata region');
  const count = region.readUInt16LE(10);
  if (count > 2047) throw new ImageFormatError(name, at + 10, `a metadata table of ${count} entries (2047 at most)`);
  const items = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    const e = region.subarray(32 + 32 * i, 64 + 32 * i);
    const guid = guidText(e.subarray(0, 16));
    const offset = e.readUInt32LE(16);
    const length = e.readUInt32LE(20);
    if (length > 0 && (offset < 64 * KIB || offset + length > region.length)) throw new ImageFormatError(name, at + 32 + 32 * i, `metadata item ${guid} at ${offset} (${length} bytes) lies outside its region`);
    if (!KNOWN.has(guid) && e.readUInt32LE(24) & 4) throw new UnsupportedImageError(name, `the required VHDX metadata item ${guid}`);
    items.set(guid, region.subarray(offset, offset + length));
  }
  const item = (guid: string, what: string, bytes: number): Buffer => {
    const b = items.get(guid);
    if (!b || b.length < bytes) throw new ImageFormatError(name, at, `the metadata has no ${what}`);
    return b;
  };
  const params = item(FILE_PARAMETERS, 'file parameters', 8);
  const blockSize = params.readUInt32LE(0);
  if (blockSize < MIB || blockSize > 256 * MIB || (blockSize & (blockSize - 1)) !== 0) throw new ImageFormatError(name, at, `a block size of ${blockSize} bytes (a power of two from 1 MiB to 256 MiB)`);
  if (params.readUInt32LE(4) & 2) {
    const parent = parentPath(items.get(PARENT_LOCATOR));
    throw new UnsupportedImageError(name, `a differencing VHDX (it has a parent${parent === null ? '' : `, ${parent}`}; qemu-img convert it to a whole image first)`);
  }
  const logicalSectorSize = item(LOGICAL_SECTOR_SIZE, 'logical sector size', 4).readUInt32LE(0);
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw new ImageFormatError(name, at, `a logical sector size of ${logicalSectorSize} bytes (512 or 4096)`);
  const virtualSize = Number(item(VIRTUAL_DISK_SIZE, 'virtual disk size', 8).readBigUInt64LE(0));
  if (virtualSize === 0 || virtualSize > MAX_VIRTUAL_SIZE || virtualSize % logicalSectorSize !== 0) throw new ImageFormatError(name, at, `a virtual size of ${virtualSize} bytes (whole sectors, 64 TiB at most)`);
  return { blockSize, fixed: (params.readUInt32LE(4) & 1) !== 0, virtualSize, logicalSectorSize };
}
