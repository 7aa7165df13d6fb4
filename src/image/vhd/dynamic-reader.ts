import type { ByteSource } from '../byte-source.js';
import { ImageFormatError, UnsupportedImageError } from '../errors.js';
import type { ImageReader, ImageSink } from '../image-reader.js';
import { bitmapBytes, HEADER_SIZE, parseDynamicHeader, UNALLOCATED, type DynamicHeader, type ParentLocator } from './dynamic-header.js';
import { FOOTER_SIZE, parseFooter, type Footer } from './footer.js';
import { MAX_SECTORS, sizeNotes, visibleSectors } from './geometry.js';
import { checkNoOverlap, readExactly, readInOrder, type Extent } from './ordered-reads.js';
import { parentName } from './parent.js';
import { emitSetSectors } from './sector-bitmap.js';

/** 64 Mi entries: a 2040 GiB disk of 32 KiB blocks. Smaller blocks on a disk that large are refused rather than held. */
const MAX_BAT_BYTES = 256 * 1024 * 1024;

type Piece = { kind: 'meta'; name: string } | { kind: 'bat' } | { kind: 'locator'; locator: ParentLocator } | { kind: 'block'; index: number; bitmap?: Buffer };

const describe = (e: Extent<Piece>): string => {
  switch (e.tag.kind) {
    case 'meta':
      return e.tag.name;
    case 'bat':
      return 'the BAT';
    case 'locator':
      return `the parent locator ${e.tag.locator.platform}`;
    case 'block':
      return `block ${e.tag.index} (at file offset ${e.file})`;
  }
};

/**
 * A dynamic or differencing disk: a footer copy at 0, the dynamic header,
 * the BAT, then blocks of a sector bitmap and data, then the footer. The
 * metadata is read here, in file order, so that a stream serves it; every
 * block is checked against the file's end and against every other extent.
 */
export async function openDynamicVhd(source: ByteSource, footer: Footer): Promise<ImageReader> {
  const name = source.name;
  const sectors = visibleSectors(footer.creatorApp, footer.geometry, footer.currentSize);
  if (sectors > MAX_SECTORS) throw new ImageFormatError(name, 0, `a size of ${sectors * 512} bytes, more than the 2040 GiB a VHD holds`);
  const virtualSize = sectors * 512;
  const dataOffset = footer.dataOffset!;
  if (dataOffset < FOOTER_SIZE) throw new ImageFormatError(name, 16, `the dynamic header offset ${dataOffset} lies inside the footer copy`);
  const header = parseDynamicHeader(await readExactly(source, dataOffset, HEADER_SIZE, 'the dynamic header'));
  if (typeof header === 'string') throw new ImageFormatError(name, dataOffset, header);
  const entries = header.maxTableEntries;
  if (entries * header.blockSize < virtualSize) throw new ImageFormatError(name, dataOffset + 28, `the BAT maps ${entries * header.blockSize} bytes of the disk's ${virtualSize}`);
  if (entries > Math.ceil((MAX_SECTORS * 512) / header.blockSize)) throw new ImageFormatError(name, dataOffset + 28, `a BAT of ${entries} entries, more than a 2040 GiB disk needs`);
  // Entries past the disk's end are never used: only those the disk needs are read (some tools size the BAT for a larger disk).
  const used = Math.ceil(virtualSize / header.blockSize);
  if (used * 4 > MAX_BAT_BYTES) throw new UnsupportedImageError(name, `a BAT of ${used} entries (${header.blockSize}-byte blocks; Strata reads BATs up to ${MAX_BAT_BYTES} bytes)`);

  const meta: Extent<Piece>[] = [
    { file: 0, length: FOOTER_SIZE, tag: { kind: 'meta', name: 'the footer copy' } },
    { file: dataOffset, length: HEADER_SIZE, tag: { kind: 'meta', name: 'the dynamic header' } },
    { file: header.tableOffset, length: used * 4, tag: { kind: 'bat' } },
  ];
  const differencing = footer.type === 'differencing';
  if (differencing) {
    for (const locator of header.locators) {
      // A path: a few hundred bytes in every tool's files, and held in memory.
      if (locator.length > 64 * 1024) throw new ImageFormatError(name, dataOffset + 576, `a parent locator of ${locator.length} bytes`);
      meta.push({ file: locator.offset, length: locator.length, tag: { kind: 'locator', locator } });
    }
  }
  checkNoOverlap(name, meta, describe);
  const end = source.size;
  if (end !== null) {
    for (const e of meta) if (e.file + e.length > end - FOOTER_SIZE && e.tag.kind !== 'meta') throw new ImageFormatError(name, e.file, `${describe(e)} runs past the footer at ${end - FOOTER_SIZE}`);
    if (source.seekable) await checkTrailer(source, end);
  }

  const batPieces: Buffer[] = [];
  const locatorPieces = new Map<ParentLocator, Buffer[]>();
  await readInOrder(
    source,
    meta.filter((e) => e.tag.kind !== 'meta'),
    async (e, _at, buf) => {
      if (e.tag.kind === 'bat') batPieces.push(buf);
      else if (e.tag.kind === 'locator') locatorPieces.set(e.tag.locator, [...(locatorPieces.get(e.tag.locator) ?? []), buf]);
    },
    describe,
  );
  const bat = Buffer.concat(batPieces);
  const locatorData = new Map([...locatorPieces].map(([locator, pieces]) => [locator, Buffer.concat(pieces)]));
  const blocks = blockExtents(name, header, bat, virtualSize, end);
  checkNoOverlap(name, [...meta, ...blocks], describe);

  let backing = null;
  if (differencing) {
    const parent = parentName(header, locatorData);
    if (parent === null) throw new ImageFormatError(name, dataOffset, 'a differencing disk that names no parent (no parent locator and no parent name)');
    backing = { file: parent, format: 'vhd' as const };
  }
  const bitmapSize = bitmapBytes(header.blockSize);
  return {
    format: 'vhd',
    subformat: differencing ? 'differencing' : 'dynamic',
    virtualSize,
    backing,
    notes: sizeNotes(footer.creatorApp, virtualSize, footer.currentSize),
    decode: async (sink: ImageSink, signal?: AbortSignal) => {
      await readInOrder(
        source,
        blocks,
        async (e, at, buf) => {
          if (e.tag.kind !== 'block') return;
          if (at === 0) e.tag.bitmap = buf.subarray(0, bitmapSize);
          const from = Math.max(at, bitmapSize);
          if (from >= at + buf.length) return;
          const base = e.tag.index * header.blockSize;
          await emitSetSectors(e.tag.bitmap!, (from - bitmapSize) / 512, buf.subarray(from - at), (sector, data) => sink.data(base + sector * 512, data));
        },
        describe,
        signal,
      );
      if (end !== null && !source.seekable) await checkTrailer(source, end);
    },
  };
}

/** Each allocated block inside the disk as the extent of its bitmap and data, cut at the disk's end. */
function blockExtents(name: string, header: DynamicHeader, bat: Buffer, virtualSize: number, end: number | null): Extent<Piece>[] {
  const bitmapSize = bitmapBytes(header.blockSize);
  const out: Extent<Piece>[] = [];
  for (let index = 0; index * header.blockSize < virtualSize; index++) {
    const entry = bat.readUInt32BE(index * 4);
    if (entry === UNALLOCATED) continue;
    const file = entry * 512;
    const length = bitmapSize + Math.min(header.blockSize, virtualSize - index * header.blockSize);
    const extent: Extent<Piece> = { file, length, tag: { kind: 'block', index } };
    if (end !== null && file + length > end) throw new ImageFormatError(name, header.tableOffset + index * 4, `${describe(extent)} ends past the end of the file (${end} bytes): the file is truncated or the BAT damaged`);
    if (end !== null && file + length > end - FOOTER_SIZE) throw new ImageFormatError(name, header.tableOffset + index * 4, `${describe(extent)} overlaps the footer at ${end - FOOTER_SIZE}`);
    out.push(extent);
  }
  return out;
}

/** The footer at the end must be there: without it the file was cut short. */
async function checkTrailer(source: ByteSource, end: number): Promise<void> {
  const f = parseFooter(await readExactly(source, end - FOOTER_SIZE, FOOTER_SIZE, 'the footer'));
  if (typeof f === 'string') throw new ImageFormatError(source.name, end - FOOTER_SIZE, `${f} at the end of the file (truncated?)`);
}
