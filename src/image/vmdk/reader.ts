import type { ByteSource } from '../byte-source.js';
import { readAhead } from '../read-ahead.js';
import { ImageFormatError, UnsupportedImageError } from '../errors.js';
import type { BackingRef, ImageReader, ImageSink } from '../image-reader.js';
import { NO_PARENT, parseDescriptor, type Descriptor } from './descriptor.js';
import { describeExtent, readExact } from './extent.js';
import { COMPRESSION_DEFLATE, COMPRESSION_NONE, ENTRY_BYTES, FLAG_MARKERS, FLAG_NEWLINE_TEST, GD_AT_END, isSparseMagic, parseHeader, SECTOR, type SparseHeader } from './header.js';
import { decodeByMarkers } from './marker-walk.js';
import { decodeByTables } from './table-walk.js';

/** Sectors an embedded descriptor may take; VMware and qemu reserve 1 to 20. */
const MAX_DESCRIPTOR_SECTORS = 2048;
/** Grains beyond 16 MiB are not believed: each one is held whole while it is decoded. */
const MAX_GRAIN_SECTORS = 32768;
/**
 * Bytes of grain directory believed: 2^20 tables, 2 TiB in the smallest
 * grains the specification allows (4 KiB), 32 TiB in the usual 64 KiB. A
 * larger capacity is refused before anything its size is read.
 */
const MAX_DIRECTORY_BYTES = 4 * 1024 * 1024;
/** Bytes of a descriptor file read to say what it is. */
const DESCRIPTOR_FILE_BYTES = 64 * 1024;

/**
 * Opens a VMDK hosted sparse extent (magic KDMV, versions 1 to 3) with its
 * embedded descriptor: monolithicSparse and streamOptimized. Descriptor
 * files whose data lies in other files and ESX Server's COWD and seSparse
 * extents are refused by name.
 */
/** Bytes of a compressed extent read at once. */
const READ_AHEAD = 4 * 1024 * 1024;

export async function openVmdk(source: ByteSource): Promise<ImageReader> {
  const head = await source.read(0, SECTOR);
  if (!isSparseMagic(head)) await refuseOther(source, head);
  const header = parseHeader(head, source.name, 0);
  checkHeader(source.name, header);
  const extent = describeExtent(source, header);
  if (extent.gtCount * ENTRY_BYTES > MAX_DIRECTORY_BYTES) throw new ImageFormatError(source.name, 12, `a capacity of ${header.capacity} sectors in grains of ${header.grainSize} needs ${extent.gtCount} grain tables, more than the ${MAX_DIRECTORY_BYTES / ENTRY_BYTES} believed`);
  const descriptor = await readEmbeddedDescriptor(source, header);
  const createType = checkDescriptor(source.name, header, descriptor);
  const markers = (header.flags & FLAG_MARKERS) !== 0;
  const notes: string[] = [];
  if (header.uncleanShutdown) notes.push('the image was not closed cleanly (uncleanShutdown is set); its data is read as it stands');
  return {
    format: 'vmdk',
    subformat: extent.compressed ? 'streamOptimized' : createType,
    virtualSize: extent.virtualSize,
    backing: backingOf(source.name, descriptor),
    notes,
    decode: (sink: ImageSink, signal?: AbortSignal) => {
      // Compressed grains are small pieces in file order: read in windows, not a call per marker and per grain.
      const walked = extent.compressed ? describeExtent(readAhead(source, READ_AHEAD), header) : extent;
      return markers && header.gdOffset === GD_AT_END ? decodeByMarkers(walked, sink, signal) : decodeByTables(walked, sink, signal);
    },
  };
}

/** What a file that is no KDMV extent is, refused by name. */
async function refuseOther(source: ByteSource, head: Buffer): Promise<never> {
  const magic = head.toString('latin1', 0, 4);
  if (magic === 'COWD') throw new UnsupportedImageError(source.name, 'the COWD sparse extent of ESX Server (vmfsSparse)');
  if (head.length >= 8 && head.readBigUInt64LE(0) === 0xcafebaben) throw new UnsupportedImageError(source.name, 'the seSparse extent of ESXi');
  const text = head.toString('latin1');
  if (/^\s*(#|version=|createType=)/.test(text)) {
    const rest = head.length === SECTOR ? await source.read(SECTOR, DESCRIPTOR_FILE_BYTES - SECTOR) : Buffer.alloc(0);
    const d = parseDescriptor(Buffer.concat([head, rest]).toString('latin1').split('\0')[0]!);
    const files = d.extents.map((x) => x.file).filter((f): f is string => f !== null);
    throw new UnsupportedImageError(source.name, `a VMDK descriptor file (createType "${d.createType ?? '?'}") whose data lies in separate extent files${files.length ? ` (${files.join(', ')})` : ''}; convert it to one file first (qemu-img convert -O vmdk)`);
  }
  throw new ImageFormatError(source.name, 0, 'no KDMV magic: not a VMDK sparse extent');
}

function checkHeader(file: string, h: SparseHeader): void {
  if (h.version < 1 || h.version > 3) throw new UnsupportedImageError(file, `version ${h.version} of the VMDK sparse extent`);
  if ((h.flags & FLAG_NEWLINE_TEST) !== 0 && !h.newlinesIntact) throw new ImageFormatError(file, 73, 'the newline-detection bytes are changed: the file went through a text-mode transfer that rewrote its line ends');
  if (h.compressAlgorithm !== COMPRESSION_NONE && h.compressAlgorithm !== COMPRESSION_DEFLATE) throw new UnsupportedImageError(file, `compression algorithm ${h.compressAlgorithm}`);
  if (h.compressAlgorithm === COMPRESSION_DEFLATE && (h.flags & FLAG_MARKERS) === 0) throw new UnsupportedImageError(file, 'compressed grains without grain markers');
  if (h.gdOffset === GD_AT_END && (h.compressAlgorithm !== COMPRESSION_DEFLATE || (h.flags & FLAG_MARKERS) === 0)) throw new UnsupportedImageError(file, 'a grain directory at the end of an extent without compressed grains and markers');
  if (h.grainSize < 1 || h.grainSize > MAX_GRAIN_SECTORS) throw new ImageFormatError(file, 20, `a grain size of ${h.grainSize} sectors`);
  if (h.numGTEsPerGT < 1 || h.numGTEsPerGT > 512) throw new ImageFormatError(file, 44, `${h.numGTEsPerGT} entries per grain table (VMDK has 512)`);
  if (h.capacity === 0) throw new ImageFormatError(file, 12, 'a capacity of 0 sectors');
  if (h.capacity * SECTOR > Number.MAX_SAFE_INTEGER) throw new ImageFormatError(file, 12, `a capacity of ${h.capacity} sectors`);
}

async function readEmbeddedDescriptor(source: ByteSource, h: SparseHeader): Promise<Descriptor> {
  if (h.descriptorOffset === 0 || h.descriptorSize === 0) throw new UnsupportedImageError(source.name, 'a sparse extent without an embedded descriptor (one extent of a split VMDK, whose descriptor file names it)');
  if (h.descriptorSize > MAX_DESCRIPTOR_SECTORS) throw new ImageFormatError(source.name, 36, `an embedded descriptor of ${h.descriptorSize} sectors`);
  const at = h.descriptorOffset * SECTOR;
  const length = h.descriptorSize * SECTOR;
  if (source.size !== null && at + length > source.size) throw new ImageFormatError(source.name, at, `the embedded descriptor ends at ${at + length}, past the end of the file (${source.size} bytes)`);
  const extent = describeExtent(source, h);
  const text = (await readExact(extent, at, length, 'the embedded descriptor')).toString('latin1').split('\0')[0]!;
  return parseDescriptor(text);
}

/** The createType, once the descriptor is seen to describe this one file. */
function checkDescriptor(file: string, h: SparseHeader, d: Descriptor): 'monolithicSparse' | 'streamOptimized' {
  const at = h.descriptorOffset * SECTOR;
  const ct = d.createType;
  if (ct === null) throw new ImageFormatError(file, at, 'the embedded descriptor has no createType');
  if (ct !== 'monolithicSparse' && ct !== 'streamOptimized') throw new UnsupportedImageError(file, `a VMDK of createType "${ct}" (only monolithicSparse and streamOptimized are one file)`);
  if (d.extents.length !== 1) throw new UnsupportedImageError(file, `a descriptor with ${d.extents.length} extents`);
  const x = d.extents[0]!;
  if (x.type !== 'SPARSE') throw new UnsupportedImageError(file, `a ${x.type} extent in a ${ct} VMDK`);
  if (x.sectors !== h.capacity) throw new ImageFormatError(file, at, `the descriptor's extent has ${x.sectors} sectors, the header a capacity of ${h.capacity}`);
  return ct;
}

/** The parent a delta disk names; a parent CID with no name to find it by is refused, since the disk alone reads wrong. */
function backingOf(file: string, d: Descriptor): BackingRef | null {
  if (d.parentFileNameHint !== null && d.parentFileNameHint !== '') return { file: d.parentFileNameHint, format: 'vmdk' };
  if (d.parentCid !== null && d.parentCid !== NO_PARENT) throw new ImageFormatError(file, null, `the descriptor names a parent (parentCID ${d.parentCid}) but no parentFileNameHint to find it by`);
  return null;
}
