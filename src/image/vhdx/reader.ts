import type { ByteSource } from '../byte-source.js';
import { ImageFormatError, UnsupportedImageError } from '../errors.js';
import type { ImageReader, ImageSink } from '../image-reader.js';
import { checkNoOverlap, readExactly, readInOrder, type Extent } from '../vhd/ordered-reads.js';
import { batLayout, payloadEntry } from './bat.js';
import { HEADER_BYTES, HEADER_SECTION, parseHeaderSection, type Region } from './header-section.js';
import { parseMetadata, type VhdxMetadata } from './metadata.js';

/** The BAT region is read whole only when it comes before the metadata on a stream; past this it is refused. */
const MAX_BAT_REGION = 256 * 1024 * 1024;
/** Hyper-V and qemu make it 1 MiB; it is read whole. */
const MAX_METADATA_REGION = 64 * 1024 * 1024;

type Piece = { kind: 'meta'; name: string } | { kind: 'block'; block: number };
const describe = (e: Extent<Piece>): string => (e.tag.kind === 'meta' ? e.tag.name : `block ${e.tag.block} (at file offset ${e.file})`);

/**
 * A VHDX: the header section, then the log, metadata and BAT regions
 * wherever the region table puts them, then the payload blocks. A block
 * is zero, absent (reads zeroes) or fully present; the sector bitmap
 * entries matter only to differencing disks, which are refused.
 */
export async function openVhdx(source: ByteSource): Promise<ImageReader> {
  const name = source.name;
  const regions = parseHeaderSection(name, await source.read(0, HEADER_BYTES));
  const meta: Extent<Piece>[] = [
    { file: 0, length: HEADER_SECTION, tag: { kind: 'meta', name: 'the header section' } },
    { file: regions.metadata.offset, length: regions.metadata.length, tag: { kind: 'meta', name: 'the metadata region' } },
    { file: regions.bat.offset, length: regions.bat.length, tag: { kind: 'meta', name: 'the BAT region' } },
  ];
  if (regions.log.length > 0) meta.push({ file: regions.log.offset, length: regions.log.length, tag: { kind: 'meta', name: 'the log' } });
  checkNoOverlap(name, meta, describe);

  if (regions.metadata.length > MAX_METADATA_REGION) throw new UnsupportedImageError(name, `a VHDX metadata region of ${regions.metadata.length} bytes (Strata reads up to ${MAX_METADATA_REGION})`);
  const readRegion = (r: Region, length: number, what: string): Promise<Buffer> => readExactly(source, r.offset, length, what);
  const readMetadata = async (): Promise<VhdxMetadata> => parseMetadata(name, await readRegion(regions.metadata, regions.metadata.length, 'the metadata region'), regions.metadata.offset);
  let metadata: VhdxMetadata;
  let bat: Buffer;
  if (source.seekable || regions.metadata.offset < regions.bat.offset) {
    metadata = await readMetadata();
    bat = await readRegion(regions.bat, Math.min(regions.bat.length, batLayout(metadata).entries * 8), 'the BAT');
  } else {
    if (regions.bat.length > MAX_BAT_REGION) throw new ImageFormatError(name, regions.bat.offset, `a BAT region of ${regions.bat.length} bytes before the metadata, too large to hold while streaming (read the image from a file)`);
    bat = await readRegion(regions.bat, regions.bat.length, 'the BAT');
    metadata = await readMetadata();
  }
  const layout = batLayout(metadata);
  if (bat.length < layout.entries * 8) throw new ImageFormatError(name, regions.bat.offset, `the BAT region holds ${Math.floor(bat.length / 8)} entries of the ${layout.entries} the disk needs`);

  const { blockSize, virtualSize } = metadata;
  const blocks: Extent<Piece>[] = [];
  const zeroes: { offset: number; length: number }[] = [];
  for (let block = 0; block < layout.payloadBlocks; block++) {
    const { state, file } = payloadEntry(name, bat, regions.bat.offset, layout, block);
    const length = Math.min(blockSize, virtualSize - block * blockSize);
    if (state === 'zero') {
      const last = zeroes[zeroes.length - 1];
      if (last && last.offset + last.length === block * blockSize) last.length += length;
      else zeroes.push({ offset: block * blockSize, length });
    }
    if (state !== 'present') continue;
    const extent: Extent<Piece> = { file, length, tag: { kind: 'block', block } };
    if (source.size !== null && file + length > source.size) throw new ImageFormatError(name, regions.bat.offset + 8 * (block + Math.floor(block / layout.chunkRatio)), `${describe(extent)} ends past the end of the file (${source.size} bytes): the file is truncated or the BAT damaged`);
    blocks.push(extent);
  }
  checkNoOverlap(name, [...meta, ...blocks], describe);
  return {
    format: 'vhdx',
    subformat: metadata.fixed ? 'fixed' : 'dynamic',
    virtualSize,
    backing: null,
    notes: [],
    decode: async (sink: ImageSink, signal?: AbortSignal) => {
      for (const z of zeroes) await sink.zero(z.offset, z.length);
      await readInOrder(
        source,
        blocks,
        async (e, at, buf) => {
          if (e.tag.kind === 'block') await sink.data(e.tag.block * blockSize + at, buf);
        },
        describe,
        signal,
      );
    },
  };
}
