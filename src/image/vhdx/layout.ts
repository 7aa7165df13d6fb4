import crypto from 'node:crypto';
import { structureChecksum } from './crc32c.js';
import { BAT_REGION, FILE_PARAMETERS, guidBytes, LOGICAL_SECTOR_SIZE, METADATA_REGION, PHYSICAL_SECTOR_SIZE, VIRTUAL_DISK_ID, VIRTUAL_DISK_SIZE } from './guid.js';
import { HEADER_BYTES, KIB, MIB } from './header-section.js';

/** Where the regions of a VHDX Strata writes go: the log, then the metadata before the BAT, so that a reader of a stream knows the block size when the BAT comes. */
export interface WrittenLayout {
  log: { offset: number; length: number };
  metadata: { offset: number; length: number };
  bat: { offset: number; length: number };
  /** The first byte after the BAT: payload blocks start here. */
  dataStart: number;
}

export function writtenLayout(batEntries: number): WrittenLayout {
  const batLength = Math.ceil((batEntries * 8) / MIB) * MIB;
  return {
    log: { offset: MIB, length: MIB },
    metadata: { offset: 2 * MIB, length: MIB },
    bat: { offset: 3 * MIB, length: batLength },
    dataStart: 3 * MIB + batLength,
  };
}

/** The file identifier, both headers (an empty log) and both region tables: the first HEADER_BYTES of the file. */
export function encodeHeaderSection(layout: WrittenLayout): Buffer {
  const buf = Buffer.alloc(HEADER_BYTES);
  buf.write('vhdxfile', 0, 'latin1');
  buf.write('Strata', 8, 'utf16le');
  const fileWrite = crypto.randomBytes(16);
  const dataWrite = crypto.randomBytes(16);
  for (const [at, sequence] of [[64 * KIB, 1n], [128 * KIB, 2n]] as const) {
    const h = buf.subarray(at, at + 4 * KIB);
    h.write('head', 0, 'latin1');
    h.writeBigUInt64LE(sequence, 8);
    fileWrite.copy(h, 16);
    dataWrite.copy(h, 32);
    // Log GUID (48..64) stays zero: there is nothing to replay.
    h.writeUInt16LE(0, 64);
    h.writeUInt16LE(1, 66);
    h.writeUInt32LE(layout.log.length, 68);
    h.writeBigUInt64LE(BigInt(layout.log.offset), 72);
    h.writeUInt32LE(structureChecksum(h), 4);
  }
  for (const at of [192 * KIB, 256 * KIB]) {
    const t = buf.subarray(at, at + 64 * KIB);
    t.write('regi', 0, 'latin1');
    t.writeUInt32LE(2, 8);
    const regions: [string, { offset: number; length: number }][] = [
      [BAT_REGION, layout.bat],
      [METADATA_REGION, layout.metadata],
    ];
    regions.forEach(([guid, r], i) => {
      const e = t.subarray(16 + 32 * i, 48 + 32 * i);
      guidBytes(guid).copy(e, 0);
      e.writeBigUInt64LE(BigInt(r.offset), 16);
      e.writeUInt32LE(r.length, 24);
      e.writeUInt32LE(1, 28);
    });
    t.writeUInt32LE(structureChecksum(t), 4);
  }
  return buf;
}

/** The metadata region's used part: its table and the five items every VHDX has. */
export function encodeMetadata(m: { blockSize: number; virtualSize: number; logicalSectorSize: number; physicalSectorSize: number; fixed: boolean }): Buffer {
  const buf = Buffer.alloc(64 * KIB + 64);
  buf.write('metadata', 0, 'latin1');
  const IS_VIRTUAL_DISK = 2;
  const IS_REQUIRED = 4;
  const items: [string, Buffer, number][] = [
    // LeaveBlocksAllocated (bit 0) is what makes a VHDX fixed to Hyper-V.
    [FILE_PARAMETERS, u32s(m.blockSize, m.fixed ? 1 : 0), IS_REQUIRED],
    [VIRTUAL_DISK_SIZE, u64(m.virtualSize), IS_VIRTUAL_DISK | IS_REQUIRED],
    [VIRTUAL_DISK_ID, crypto.randomBytes(16), IS_VIRTUAL_DISK | IS_REQUIRED],
    [LOGICAL_SECTOR_SIZE, u32s(m.logicalSectorSize), IS_VIRTUAL_DISK | IS_REQUIRED],
    [PHYSICAL_SECTOR_SIZE, u32s(m.physicalSectorSize), IS_VIRTUAL_DISK | IS_REQUIRED],
  ];
  buf.writeUInt16LE(items.length, 10);
  let offset = 64 * KIB;
  items.forEach(([guid, value, flags], i) => {
    const e = buf.subarray(32 + 32 * i, 64 + 32 * i);
    guidBytes(guid).copy(e, 0);
    e.writeUInt32LE(offset, 16);
    e.writeUInt32LE(value.length, 20);
    e.writeUInt32LE(flags, 24);
    value.copy(buf, offset);
    offset += value.length;
  });
  return buf;
}

function u32s(...values: number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeUInt32LE(v, 4 * i));
  return b;
}

function u64(value: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(value));
  return b;
}
