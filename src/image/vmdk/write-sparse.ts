import type { ByteSink, ImageContent, WriteResult } from '../image-writer.js';
import { dataGrains } from './data-grains.js';
import { COMPRESSION_NONE, ENTRY_BYTES, FLAG_NEWLINE_TEST, FLAG_REDUNDANT_GRAIN_TABLE, SECTOR, type SparseHeader } from './header.js';
import { DESCRIPTOR_SECTORS, geometry, GRAIN_SECTORS, GTES_PER_GT, headBytes, type VmdkWriteOptions } from './layout.js';
import { TaskWindow } from './task-window.js';

/** Writes in flight, each of the grains of one read of the content that hold data and lie side by side. */
const WRITE_DEPTH = 4;

/**
 * A monolithicSparse VMDK as VMware and qemu-img lay it out: header,
 * descriptor, the redundant grain directory and its tables, the grain
 * directory and its tables, then the grains. The tables are filled in once
 * the grains are placed, so the sink must be a file; tables of grains never
 * written stay holes in it.
 */
export async function writeMonolithicSparse(content: ImageContent, sink: ByteSink, opts: VmdkWriteOptions): Promise<WriteResult> {
  if (!sink.seekable) throw new Error(`${sink.name}: a monolithicSparse VMDK has its grain tables before its grains and cannot be written to a stream (the streamOptimized subformat can)`);
  const g = geometry(content.size);
  const rgdOffset = 1 + DESCRIPTOR_SECTORS;
  const rgtOffset = rgdOffset + g.gdSectors;
  const gdOffset = rgtOffset + g.gtCount * g.gtSectors;
  const gtOffset = gdOffset + g.gdSectors;
  const overHead = Math.ceil((gtOffset + g.gtCount * g.gtSectors) / GRAIN_SECTORS) * GRAIN_SECTORS;
  const header: SparseHeader = {
    version: 1,
    flags: FLAG_NEWLINE_TEST | FLAG_REDUNDANT_GRAIN_TABLE,
    capacity: g.capacity,
    grainSize: GRAIN_SECTORS,
    descriptorOffset: 1,
    descriptorSize: DESCRIPTOR_SECTORS,
    numGTEsPerGT: GTES_PER_GT,
    rgdOffset,
    gdOffset,
    overHead,
    uncleanShutdown: false,
    newlinesIntact: true,
    compressAlgorithm: COMPRESSION_NONE,
  };
  const head = headBytes(header, sink, opts, 'monolithicSparse');

  const tables = new Map<number, Buffer>();
  let next = overHead;
  let dataBytes = 0;
  const window = new TaskWindow(WRITE_DEPTH);
  // Grains are placed one after the other, so the ones not yet written lie back to back from `batchAt`; grains
  // read together sit side by side in one buffer too, and are written as one view of it.
  let batch: Buffer | null = null;
  let batchAt = next * SECTOR;
  const flush = async (): Promise<void> => {
    if (!batch) return;
    const buf = batch;
    const at = batchAt;
    batch = null;
    batchAt = next * SECTOR;
    await window.add(() => sink.write(buf, at));
  };
  try {
    for await (const d of dataGrains(content, g.grainBytes, opts.progress, opts.signal)) {
      if (batch && (batch.buffer !== d.buf.buffer || batch.byteOffset + batch.length !== d.buf.byteOffset)) await flush();
      const index = Math.floor(d.grain / GTES_PER_GT);
      let table = tables.get(index);
      if (!table) tables.set(index, (table = Buffer.alloc(g.gtSectors * SECTOR)));
      table.writeUInt32LE(next, (d.grain % GTES_PER_GT) * ENTRY_BYTES);
      next += GRAIN_SECTORS;
      dataBytes += Math.min(g.grainBytes, content.size - d.grain * g.grainBytes);
      batch = batch ? Buffer.from(batch.buffer, batch.byteOffset, batch.length + d.buf.length) : d.buf;
    }
    await flush();
    await window.drain();
  } finally {
    await window.settle();
  }

  const rgd = Buffer.alloc(g.gdSectors * SECTOR);
  const gd = Buffer.alloc(g.gdSectors * SECTOR);
  for (let i = 0; i < g.gtCount; i++) {
    rgd.writeUInt32LE(rgtOffset + i * g.gtSectors, i * ENTRY_BYTES);
    gd.writeUInt32LE(gtOffset + i * g.gtSectors, i * ENTRY_BYTES);
  }
  for (const [i, table] of [...tables].sort((a, b) => a[0] - b[0])) {
    await sink.write(table, (rgtOffset + i * g.gtSectors) * SECTOR);
    await sink.write(table, (gtOffset + i * g.gtSectors) * SECTOR);
  }
  await sink.write(rgd, rgdOffset * SECTOR);
  await sink.write(gd, gdOffset * SECTOR);
  // The header last: a file cut short while being written has no valid header to be mistaken for a disk.
  await sink.write(head, 0);
  const fileSize = next * SECTOR;
  await sink.finish(fileSize);
  return { fileSize, dataBytes };
}
