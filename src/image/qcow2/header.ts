import type { ByteSource } from '../byte-source.js';
import { ImageFormatError, UnsupportedImageError } from '../errors.js';
import type { BackingRef, DiskFormat } from '../image-reader.js';

export const QCOW2_MAGIC = 0x514649fb;
/** qemu refuses clusters smaller than 512 bytes or larger than 2 MiB. */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** qemu's QCOW_MAX_L1_SIZE: 32 MiB of L1 table; a header claiming more is damage, not a disk. */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
/** Offsets must stay exact as JavaScript numbers. */
const MAX_OFFSET = Number.MAX_SAFE_INTEGER;

const INCOMPAT_DIRTY = 1;
const INCOMPAT_CORRUPT = 2;
const INCOMPAT_DATA_FILE = 4;
const INCOMPAT_COMPRESSION = 8;
const INCOMPAT_EXTL2 = 16;
const KNOWN_INCOMPAT = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

const EXT_END = 0;
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_FEATURE_NAMES = 0x6803f857;
const EXT_CRYPTO = 0x0537be77;
const EXT_DATA_FILE = 0x44415441;

export interface Qcow2Header {
  version: 2 | 3;
  clusterBits: number;
  clusterSize: number;
  virtualSize: number;
  l1Size: number;
  l1Offset: number;
  /** Extended L2 entries: 128 bits each, 32 subclusters per cluster. */
  extendedL2: boolean;
  /** Bytes of one L2 entry (8, or 16 with extended L2). */
  l2EntryBytes: number;
  /** Entries of one L2 table (one cluster of them). */
  l2Entries: number;
  backing: BackingRef | null;
  notes: string[];
  /** Bytes of the start of the file the header was read from: a stream has passed them. */
  headBytes: number;
}

/** The bytes of the first cluster a header and its extensions live in (qemu keeps them all there). */
const headBytes = (source: ByteSource): number => Math.min(2 * 1024 * 1024, source.size ?? 2 * 1024 * 1024);

/** 64-bit field as a number; a value past 2^53 is no offset or size any file has. */
function u64(buf: Buffer, at: number, name: string, what: string): number {
  const v = buf.readBigUInt64BE(at);
  if (v > BigInt(MAX_OFFSET)) throw new ImageFormatError(name, at, `${what} ${v} is out of range`);
  return Number(v);
}

const diskFormatOf = (name: string): DiskFormat | null => (['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx'] as const).find((f) => f === name) ?? (name === 'vpc' ? 'vhd' : null);

/**
 * Reads and checks the header, its extensions and the backing file name,
 * all of which qemu keeps in the first cluster, so a stream is read there
 * once, front to back.
 */
export async function readHeader(source: ByteSource): Promise<Qcow2Header> {
  const name = source.name;
  const first = await source.read(0, 104);
  if (first.length < 72) throw new ImageFormatError(name, first.length, 'ends inside the qcow2 header');
  if (first.readUInt32BE(0) !== QCOW2_MAGIC) throw new ImageFormatError(name, 0, 'has no qcow2 magic');
  const version = first.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new UnsupportedImageError(name, `qcow2 version ${version}`);
  const clusterBits = first.readUInt32BE(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) throw new ImageFormatError(name, 20, `cluster_bits ${clusterBits} is outside ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
  const clusterSize = 2 ** clusterBits;
  const headerLength = version === 2 ? 72 : first.length >= 104 ? first.readUInt32BE(100) : 0;
  if (version === 3 && (headerLength < 104 || headerLength % 8 !== 0 || headerLength > clusterSize)) throw new ImageFormatError(name, 100, `header_length ${headerLength} is not a multiple of 8 between 104 and the cluster size`);
  // Everything the header points at inside the first cluster is read in one go.
  const head = Buffer.concat([first, await source.read(first.length, Math.max(0, Math.min(clusterSize, headBytes(source)) - first.length))]);
  if (head.length < headerLength) throw new ImageFormatError(name, head.length, 'ends inside the qcow2 header');

  const cryptMethod = head.readUInt32BE(32);
  if (cryptMethod !== 0) throw new UnsupportedImageError(name, `qcow2 encryption (crypt_method ${cryptMethod === 1 ? 'AES' : cryptMethod === 2 ? 'LUKS' : cryptMethod})`);
  const virtualSize = u64(head, 24, name, 'the virtual size');
  const l1Size = head.readUInt32BE(36);
  const l1Offset = u64(head, 40, name, 'l1_table_offset');
  const nbSnapshots = head.readUInt32BE(60);

  let incompat = 0;
  let refcountOrder = 4;
  let compressionType = 0;
  if (version === 3) {
    const bits = head.readBigUInt64BE(72);
    if (bits >> 32n !== 0n || (Number(bits) & ~KNOWN_INCOMPAT) !== 0) {
      const names = featureNames(head, headerLength);
      const unknown: string[] = [];
      for (let b = 0; b < 64; b++) if (((bits >> BigInt(b)) & 1n) === 1n && !(b < 5)) unknown.push(names.get(b) ?? `bit ${b}`);
      throw new UnsupportedImageError(name, `the qcow2 incompatible feature${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}`);
    }
    incompat = Number(bits);
    refcountOrder = head.readUInt32BE(96);
    if (headerLength > 104) compressionType = head.readUInt8(104);
  }
  if (refcountOrder > 6) throw new ImageFormatError(name, 96, `refcount_order ${refcountOrder} is above 6`);
  if (incompat & INCOMPAT_CORRUPT) throw new ImageFormatError(name, 72, 'is marked corrupt by qemu (qemu-img check -r all repairs it)');
  if (incompat & INCOMPAT_DATA_FILE) throw new UnsupportedImageError(name, 'a qcow2 external data file');
  if (incompat & INCOMPAT_COMPRESSION) {
    if (compressionType === 1) throw new UnsupportedImageError(name, 'zstd compression of qcow2 clusters');
    if (compressionType !== 0) throw new UnsupportedImageError(name, `qcow2 compression type ${compressionType}`);
  } else if (compressionType !== 0) throw new ImageFormatError(name, 104, `compression type ${compressionType} without its incompatible feature bit`);
  const extendedL2 = (incompat & INCOMPAT_EXTL2) !== 0;
  if (extendedL2 && clusterBits < 14) throw new ImageFormatError(name, 20, `extended L2 entries need clusters of 16 KiB or more, not ${clusterSize}`);

  const notes: string[] = [];
  if (incompat & INCOMPAT_DIRTY) notes.push('the image is marked dirty (its refcounts were not brought up to date); its data is read as it is mapped');
  if (nbSnapshots > 0) notes.push(`${nbSnapshots} internal snapshot${nbSnapshots > 1 ? 's are' : ' is'} not imported (only the active layer is)`);

  // Extensions: one of them may name the backing file's format; unknown ones are skipped, as the format allows.
  let backingFormat: string | null = null;
  for (let at = headerLength; ; ) {
    if (at + 8 > head.length) throw new ImageFormatError(name, at, 'header extensions run past the first cluster');
    const type = head.readUInt32BE(at);
    const length = head.readUInt32BE(at + 4);
    if (type === EXT_END) break;
    const data = at + 8;
    if (data + length > head.length) throw new ImageFormatError(name, at, `header extension 0x${type.toString(16)} of ${length} bytes runs past the first cluster`);
    if (type === EXT_BACKING_FORMAT) backingFormat = head.toString('latin1', data, data + length);
    if (type === EXT_CRYPTO) throw new UnsupportedImageError(name, 'qcow2 encryption');
    if (type === EXT_DATA_FILE) throw new UnsupportedImageError(name, 'a qcow2 external data file');
    at = data + Math.ceil(length / 8) * 8;
  }

  let backing: BackingRef | null = null;
  const backingOffset = u64(head, 8, name, 'backing_file_offset');
  if (backingOffset !== 0) {
    const size = head.readUInt32BE(16);
    if (size === 0 || size > 1023) throw new ImageFormatError(name, 16, `backing file name of ${size} bytes (1 to 1023 allowed)`);
    if (backingOffset + size > head.length) throw new ImageFormatError(name, backingOffset, 'the backing file name lies outside the first cluster');
    const format = backingFormat === null ? null : diskFormatOf(backingFormat);
    if (backingFormat !== null && format === null) notes.push(`the backing file's format ${backingFormat} is not one Strata reads`);
    backing = { file: head.toString('utf8', backingOffset, backingOffset + size), format };
  }

  const l2EntryBytes = extendedL2 ? 16 : 8;
  const l2Entries = clusterSize / l2EntryBytes;
  const needed = Math.ceil(virtualSize / (clusterSize * l2Entries));
  if (l1Size < needed) throw new ImageFormatError(name, 36, `l1_size ${l1Size} maps less than the virtual size ${virtualSize} (${needed} entries needed)`);
  if (l1Size * 8 > MAX_L1_BYTES) throw new ImageFormatError(name, 36, `l1_size ${l1Size} is above qemu's limit of ${MAX_L1_BYTES / 8} entries`);
  if (l1Size > 0) {
    if (l1Offset % clusterSize !== 0 || l1Offset === 0) throw new ImageFormatError(name, 40, `the L1 table offset ${l1Offset} is not a cluster boundary past the header`);
    if (source.size !== null && l1Offset + l1Size * 8 > source.size) throw new ImageFormatError(name, l1Offset, `the L1 table (${l1Size} entries) runs past the end of the file (${source.size} bytes)`);
  }
  return { version, clusterBits, clusterSize, virtualSize, l1Size, l1Offset, extendedL2, l2EntryBytes, l2Entries, backing, notes, headBytes: head.length };
}

/** The feature name table, for naming an unknown incompatible feature as the image's writer called it. */
function featureNames(head: Buffer, headerLength: number): Map<number, string> {
  const names = new Map<number, string>();
  for (let at = headerLength; at + 8 <= head.length; ) {
    const type = head.readUInt32BE(at);
    const length = head.readUInt32BE(at + 4);
    if (type === EXT_END || at + 8 + length > head.length) break;
    if (type === EXT_FEATURE_NAMES) {
      for (let e = at + 8; e + 48 <= at + 8 + length; e += 48) {
        if (head.readUInt8(e) === 0) names.set(head.readUInt8(e + 1), head.toString('latin1', e + 2, e + 48).replace(/\0.*$/s, ''));
      }
    }
    at += 8 + Math.ceil(length / 8) * 8;
  }
  return names;
}
