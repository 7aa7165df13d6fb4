import type { ImageSink } from '../image-reader.js';
import { emitGrain, fail, grainLength, readExact, type Extent } from './extent.js';
import { GrainLog, GrainSet } from './grain-log.js';
import { ENTRY_BYTES, parseHeader, SECTOR } from './header.js';
import { inflateAt, maxCompressed } from './inflate-check.js';
import { GRAIN_MARKER_BYTES, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, parseMarker } from './markers.js';

/** A grain table the stream has shown: which directory entry it serves (known once one of its grains or the directory says), and its zero grains. */
interface TableSeen {
  index: number | null;
  zeroes: number[];
  listed: boolean;
}

/**
 * Decodes a stream-optimized extent whose grain directory comes at the end
 * (VMware's layout, the one OVAs carry) front to back by its markers, so a
 * forward-only source (a tar member, an HTTP body) is read once. Grains are
 * reported as they come; the grain tables, the directory and the footer that
 * follow are checked against them, so what is accepted is exactly what a
 * reader going through the footer's tables sees: every grain in the table
 * entry that its LBA belongs to, every table in the directory, the footer's
 * directory the one the stream held, and nothing after end-of-stream.
 */
export async function decodeByMarkers(e: Extent, sink: ImageSink, signal?: AbortSignal): Promise<void> {
  const h = e.header;
  const per = h.numGTEsPerGT;
  const metadataEnd = Math.max(...e.reserved.map(([, end]) => end));
  let pos = h.overHead * SECTOR;
  if (pos < metadataEnd) throw fail(e, 64, `overHead (${h.overHead} sectors) ends inside the header or the embedded descriptor`);

  const log = new GrainLog();
  const used = new GrainSet();
  const tables = new Map<number, TableSeen>();
  const byIndex = new Map<number, number>();
  let gdSector: number | null = null;
  let footerAt: number | null = null;

  const zeroGrains = async (index: number, entries: number[], at: number): Promise<void> => {
    for (const j of entries) {
      const grain = index * per + j;
      if (grain >= e.grainCount) throw fail(e, at, `grain table ${index} marks LBA ${grain * h.grainSize} zero, past the capacity`);
      if (!used.add(grain)) throw fail(e, at, `grain table ${index} marks LBA ${grain * h.grainSize} zero, but the stream holds a grain for it`);
      await sink.zero(grain * e.grainBytes, grainLength(e, grain));
    }
  };
  const placeTable = async (sector: number, t: TableSeen, index: number): Promise<void> => {
    const other = byIndex.get(index);
    if (other !== undefined && other !== sector) throw fail(e, sector * SECTOR, `two grain tables (at sectors ${other} and ${sector}) serve grain directory entry ${index}`);
    byIndex.set(index, sector);
    t.index = index;
    await zeroGrains(index, t.zeroes, sector * SECTOR);
    t.zeroes = [];
  };
  const readTable = async (sector: number, gt: Buffer): Promise<void> => {
    const t: TableSeen = { index: null, zeroes: [], listed: false };
    const at = sector * SECTOR;
    for (let j = 0; j < per; j++) {
      const entry = gt.readUInt32LE(j * ENTRY_BYTES);
      if (entry === 0) continue;
      if (entry === 1 && e.zeroedGrains) {
        t.zeroes.push(j);
        continue;
      }
      const grain = log.claim(entry);
      if (grain === null) throw fail(e, at + j * ENTRY_BYTES, `grain table entry ${j} points at sector ${entry}, where the stream has no grain (or one another entry took)`);
      if (grain % per !== j || (t.index !== null && Math.floor(grain / per) !== t.index)) throw fail(e, at + j * ENTRY_BYTES, `grain table entry ${j} points at the grain for LBA ${grain * h.grainSize}, which another entry must map`);
      t.index = Math.floor(grain / per);
    }
    tables.set(sector, t);
    if (t.index !== null) await placeTable(sector, t, t.index);
  };
  const readDirectory = async (sector: number, gd: Buffer): Promise<void> => {
    if (gdSector !== null) throw fail(e, sector * SECTOR, `a second grain directory (the first is at sector ${gdSector})`);
    gdSector = sector;
    for (let i = 0; i < e.gtCount; i++) {
      const s = gd.readUInt32LE(i * ENTRY_BYTES);
      if (s === 0) continue;
      const t = tables.get(s);
      const at = sector * SECTOR + i * ENTRY_BYTES;
      if (!t) throw fail(e, at, `grain directory entry ${i} points at sector ${s}, where the stream has no grain table`);
      if (t.listed || (t.index !== null && t.index !== i)) throw fail(e, at, `grain directory entry ${i} points at the grain table of entry ${t.index ?? '?'}`);
      t.listed = true;
      if (t.index === null) await placeTable(s, t, i);
    }
  };

  for (;;) {
    if (signal?.aborted) throw new Error('interrupted');
    const rec = await e.source.read(pos, SECTOR);
    if (rec.length < SECTOR) throw fail(e, pos + rec.length, rec.length === 0 ? 'the stream ends before its end-of-stream marker' : 'the stream ends inside a marker');
    const m = parseMarker(rec);
    if (!m) throw fail(e, pos, 'a marker whose LBA is past any disk');
    if (m.kind === 'grain') {
      const grain = m.lba / h.grainSize;
      if (!Number.isInteger(grain)) throw fail(e, pos, `a grain marker at LBA ${m.lba}, not a grain boundary`);
      if (grain >= e.grainCount) throw fail(e, pos, `a grain marker at LBA ${m.lba}, past the capacity of ${h.capacity} sectors`);
      if (m.size > maxCompressed(e)) throw fail(e, pos + 8, `the grain for LBA ${m.lba} claims ${m.size} compressed bytes (a grain is ${e.grainBytes})`);
      if (!used.add(grain)) throw fail(e, pos, `a second grain for LBA ${m.lba}`);
      const inMarker = Math.min(m.size, SECTOR - GRAIN_MARKER_BYTES);
      const rest = m.size > inMarker ? await readExact(e, pos + SECTOR, m.size - inMarker, `the grain for LBA ${m.lba}`) : Buffer.alloc(0);
      const data = Buffer.concat([rec.subarray(GRAIN_MARKER_BYTES, GRAIN_MARKER_BYTES + inMarker), rest]);
      log.add(pos / SECTOR, grain);
      await emitGrain(e, sink, grain, inflateAt(e, data, m.lba, pos), pos);
      pos += Math.ceil((GRAIN_MARKER_BYTES + m.size) / SECTOR) * SECTOR;
      continue;
    }
    const body = pos + SECTOR;
    if (m.type === MARKER_EOS) {
      if (m.sectors !== 0) throw fail(e, pos, `an end-of-stream marker that announces ${m.sectors} sectors`);
      break;
    }
    if (m.type === MARKER_GT) {
      if (m.sectors * SECTOR < e.gtBytes) throw fail(e, pos, `a grain table marker of ${m.sectors} sectors, less than a table's ${e.gtBytes} bytes`);
      await readTable(body / SECTOR, await readExact(e, body, e.gtBytes, 'a grain table'));
    } else if (m.type === MARKER_GD) {
      if (m.sectors * SECTOR < e.gtCount * ENTRY_BYTES) throw fail(e, pos, `a grain directory marker of ${m.sectors} sectors, less than the directory's ${e.gtCount * ENTRY_BYTES} bytes`);
      await readDirectory(body / SECTOR, await readExact(e, body, e.gtCount * ENTRY_BYTES, 'the grain directory'));
    } else if (m.type === MARKER_FOOTER) {
      if (m.sectors !== 1) throw fail(e, pos, `a footer marker of ${m.sectors} sectors (a footer is 1)`);
      const f = parseHeader(await readExact(e, body, SECTOR, 'the footer'), e.source.name, body);
      if (f.capacity !== h.capacity || f.grainSize !== h.grainSize || f.numGTEsPerGT !== per) throw fail(e, body, 'the footer disagrees with the header on capacity or grain size');
      if (gdSector === null || f.gdOffset !== gdSector) throw fail(e, body + 56, `the footer's grain directory (sector ${f.gdOffset}) is not the one the stream holds (${gdSector ?? 'none'})`);
      footerAt = body;
    } else throw fail(e, pos + 12, `a marker of unknown type ${m.type}`);
    pos = body + m.sectors * SECTOR;
  }
  if (footerAt === null) throw fail(e, pos, 'the stream ends without a footer (the header says the grain directory is at the end)');
  for (const [s, t] of tables) if (!t.listed) throw fail(e, s * SECTOR, 'a grain table that no grain directory entry points at');
  const stray = log.unclaimed();
  if (stray) throw fail(e, stray.sector * SECTOR, `the grain for LBA ${stray.grain * h.grainSize} is in no grain table`);
}
