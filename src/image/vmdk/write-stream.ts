import type { ByteSink, ImageContent, WriteResult } from '../image-writer.js';
import { dataGrains } from './data-grains.js';
import { deflateGrain } from './grain-codec.js';
import { COMPRESSION_DEFLATE, encodeHeader, ENTRY_BYTES, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_TEST, GD_AT_END, SECTOR, type SparseHeader } from './header.js';
import { DESCRIPTOR_SECTORS, geometry, GRAIN_SECTORS, GTES_PER_GT, headBytes, type VmdkWriteOptions } from './layout.js';
import { grainRecord, MARKER_FOOTER, MARKER_GD, MARKER_GT, metadataMarker } from './markers.js';

/** Grains compressing at once (on libuv's pool) ahead of the one being written. */
const DEFLATE_DEPTH = 4;

/**
 * A streamOptimized VMDK written front to back, as "Virtual Disk Format 1.1"
 * lays it out for streaming: the header (grain directory "at the end"), the
 * descriptor, then each grain with data as a grain marker and its deflated
 * bytes, each grain table after its grains behind a table marker (tables
 * with no grain are left out, their directory entry 0), the grain directory
 * behind its marker, the footer (the header with the directory's place)
 * behind its marker, and the end-of-stream marker: the last two sectors are
 * the footer and end-of-stream, where readers that seek look for them. It
 * goes to a pipe or a tar member as well as to a file.
 */
export async function writeStreamOptimized(content: ImageContent, sink: ByteSink, opts: VmdkWriteOptions): Promise<WriteResult> {
  const g = geometry(content.size);
  const header: SparseHeader = {
    version: 3,
    flags: FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
    capacity: g.capacity,
    grainSize: GRAIN_SECTORS,
    descriptorOffset: 1,
    descriptorSize: DESCRIPTOR_SECTORS,
    numGTEsPerGT: GTES_PER_GT,
    rgdOffset: 0,
    gdOffset: GD_AT_END,
    overHead: Math.ceil((1 + DESCRIPTOR_SECTORS) / GRAIN_SECTORS) * GRAIN_SECTORS,
    uncleanShutdown: false,
    newlinesIntact: true,
    compressAlgorithm: COMPRESSION_DEFLATE,
  };
  await sink.write(headBytes(header, sink, opts, 'streamOptimized'), 0);
  let pos = header.overHead * SECTOR;
  const put = async (buf: Buffer): Promise<number> => {
    const at = pos;
    pos += buf.length;
    await sink.write(buf, at);
    return at;
  };

  const gd = Buffer.alloc(g.gdSectors * SECTOR);
  let table: { index: number; entries: Buffer } | null = null;
  const flushTable = async (): Promise<void> => {
    if (!table) return;
    await put(metadataMarker(MARKER_GT, g.gtSectors));
    gd.writeUInt32LE((await put(table.entries)) / SECTOR, table.index * ENTRY_BYTES);
    table = null;
  };
  let dataBytes = 0;
  const writeGrain = async (grain: number, compressed: Buffer): Promise<void> => {
    const index = Math.floor(grain / GTES_PER_GT);
    if (table && table.index !== index) await flushTable();
    table ??= { index, entries: Buffer.alloc(g.gtSectors * SECTOR) };
    const at = await put(grainRecord(grain * GRAIN_SECTORS, compressed));
    table.entries.writeUInt32LE(at / SECTOR, (grain % GTES_PER_GT) * ENTRY_BYTES);
    dataBytes += Math.min(g.grainBytes, content.size - grain * g.grainBytes);
  };

  // Compressions run ahead in order; the writes stay in grain order, as the stream needs.
  const queue: { grain: number; compressed: Promise<Buffer> }[] = [];
  const settleAll = (): Promise<unknown> => Promise.allSettled(queue.map((q) => q.compressed));
  try {
    for await (const d of dataGrains(content, g.grainBytes, opts.progress, opts.signal)) {
      queue.push({ grain: d.grain, compressed: deflateGrain(d.buf) });
      if (queue.length >= DEFLATE_DEPTH) {
        const q = queue.shift()!;
        await writeGrain(q.grain, await q.compressed);
      }
    }
    while (queue.length > 0) {
      const q = queue.shift()!;
      await writeGrain(q.grain, await q.compressed);
    }
  } finally {
    await settleAll();
  }
  await flushTable();

  await put(metadataMarker(MARKER_GD, g.gdSectors));
  const gdOffset = (await put(gd)) / SECTOR;
  await put(metadataMarker(MARKER_FOOTER, 1));
  await put(encodeHeader({ ...header, gdOffset }));
  await put(Buffer.alloc(SECTOR)); // end-of-stream
  await sink.finish(pos);
  return { fileSize: pos, dataBytes };
}
