import type { ByteSink, ImageContent, WriteOptions, WriteResult } from '../image-writer.js';
import { ClusterRuns, DATA } from './cluster-runs.js';
import { QCOW2_MAGIC } from './header.js';

const CLUSTER_BITS = 16;
const CS = 2 ** CLUSTER_BITS;
const L2_ENTRIES = CS / 8;
/** 16-bit refcounts (refcount_order 4), as qemu makes by default. */
const REFCOUNTS_PER_BLOCK = CS / 2;
const HEADER_LENGTH = 112;
/** Data clusters read and written at once at most. */
const CHUNK_CLUSTERS = 64;
const COPIED = 0x80000000;

/** One L2 table's range of guest clusters with anything in it, and how many data clusters it holds. */
interface Group {
  index: number;
  data: number;
  /** Host cluster of its L2 table; its data clusters follow it. */
  host: number;
}

/**
 * Writes qcow2 v3 (compat 1.1), 64 KiB clusters, front to back: header, L1
 * table, refcount table and blocks, then for each L2 range its table
 * followed by its data clusters. Every table is known before any data is
 * written, so a stream or a tar member serves as the sink as well as a file.
 */
export async function writeQcow2(content: ImageContent, sink: ByteSink, opts: WriteOptions): Promise<WriteResult> {
  const runs = new ClusterRuns(CS);
  for await (const run of content.runs()) runs.add(run);
  const groups = groupsOf(runs);
  const l1Size = Math.max(1, Math.ceil(content.size / (CS * L2_ENTRIES)));
  const l1Clusters = Math.ceil((l1Size * 8) / CS);
  const payload = groups.reduce((n, g) => n + 1 + g.data, 0);
  // The refcount blocks count themselves and the table that points at them.
  let blocks = 1;
  let tableClusters = 1;
  for (;;) {
    const total = 1 + l1Clusters + tableClusters + blocks + payload;
    const b = Math.ceil(total / REFCOUNTS_PER_BLOCK);
    const t = Math.ceil((b * 8) / CS);
    if (b === blocks && t === tableClusters) break;
    blocks = b;
    tableClusters = t;
  }
  const refTableAt = 1 + l1Clusters;
  const firstBlock = refTableAt + tableClusters;
  let next = firstBlock + blocks;
  for (const g of groups) {
    g.host = next;
    next += 1 + g.data;
  }
  const total = next;

  await sink.write(header(content.size, l1Size, refTableAt, tableClusters), 0);
  const l1 = Buffer.alloc(l1Size * 8);
  for (const g of groups) put(l1, g.index * 8, g.host * CS, true);
  await sink.write(l1, CS);
  const table = Buffer.alloc(tableClusters * CS);
  for (let b = 0; b < blocks; b++) put(table, b * 8, (firstBlock + b) * CS, false);
  await sink.write(table, refTableAt * CS);
  for (let b = 0; b < blocks; b++) {
    const block = Buffer.alloc(CS);
    const count = Math.min(REFCOUNTS_PER_BLOCK, total - b * REFCOUNTS_PER_BLOCK);
    for (let i = 0; i < count; i++) block.writeUInt16BE(1, i * 2);
    await sink.write(block, (firstBlock + b) * CS);
  }

  let dataBytes = 0;
  let writing: Promise<void> = Promise.resolve();
  let r = 0;
  for (const g of groups) {
    if (opts.signal?.aborted) throw new Error('interrupted');
    const first = g.index * L2_ENTRIES;
    const last = first + L2_ENTRIES;
    while (r < runs.kind.length && runs.end[r]! <= first) r++;
    // The table first, then the data runs it maps, in guest order, which is host order too.
    const l2 = Buffer.alloc(CS);
    const dataRuns: [number, number, number][] = [];
    let host = g.host + 1;
    for (let i = r; i < runs.kind.length && runs.start[i]! < last; i++) {
      const from = Math.max(first, runs.start[i]!);
      const to = Math.min(last, runs.end[i]!);
      if (runs.kind[i] === DATA) {
        dataRuns.push([from, to, host]);
        for (let c = from; c < to; c++) put(l2, (c - first) * 8, host++ * CS, true);
      } else for (let c = from; c < to; c++) l2.writeUInt32BE(1, (c - first) * 8 + 4);
    }
    await writing;
    await sink.write(l2, g.host * CS);
    for (const [from, to, at] of dataRuns) {
      for (let c = from; c < to; c += CHUNK_CLUSTERS) {
        if (opts.signal?.aborted) throw new Error('interrupted');
        const n = Math.min(CHUNK_CLUSTERS, to - c);
        const buf = Buffer.allocUnsafe(n * CS);
        const want = Math.min(n * CS, content.size - c * CS);
        // The end of the disk's last cluster is not the disk's: zeroes.
        buf.fill(0, want);
        await content.read(buf.subarray(0, want), c * CS);
        // One chunk is read while the one before it is written; the sink still sees its offsets in order.
        await writing;
        const done = c * CS + want;
        writing = sink.write(buf, (at + c - from) * CS).then(() => opts.progress?.(done));
        // Awaited before the next write; until then a failure must not count as unhandled.
        writing.catch(() => undefined);
        dataBytes += want;
      }
    }
  }
  await writing;
  await sink.finish(total * CS);
  opts.progress?.(content.size);
  return { fileSize: total * CS, dataBytes };
}

function groupsOf(runs: ClusterRuns): Group[] {
  const groups: Group[] = [];
  for (let i = 0; i < runs.kind.length; i++) {
    for (let c = runs.start[i]!; c < runs.end[i]!; ) {
      const index = Math.floor(c / L2_ENTRIES);
      const to = Math.min(runs.end[i]!, (index + 1) * L2_ENTRIES);
      let g = groups.at(-1);
      if (g?.index !== index) groups.push((g = { index, data: 0, host: 0 }));
      if (runs.kind[i] === DATA) g.data += to - c;
      c = to;
    }
  }
  return groups;
}

/** A 64-bit big-endian offset, with bit 63 (refcount exactly one) when `copied`. */
function put(buf: Buffer, at: number, offset: number, copied: boolean): void {
  buf.writeUInt32BE(Math.floor(offset / 2 ** 32) + (copied ? COPIED : 0), at);
  buf.writeUInt32BE(offset % 2 ** 32, at + 4);
}

function header(size: number, l1Size: number, refTableCluster: number, refTableClusters: number): Buffer {
  const h = Buffer.alloc(HEADER_LENGTH + 8);
  h.writeUInt32BE(QCOW2_MAGIC, 0);
  h.writeUInt32BE(3, 4);
  h.writeUInt32BE(CLUSTER_BITS, 20);
  h.writeBigUInt64BE(BigInt(size), 24);
  h.writeUInt32BE(l1Size, 36);
  h.writeBigUInt64BE(BigInt(CS), 40);
  h.writeBigUInt64BE(BigInt(refTableCluster * CS), 48);
  h.writeUInt32BE(refTableClusters, 56);
  h.writeUInt32BE(4, 96);
  h.writeUInt32BE(HEADER_LENGTH, 100);
  // Compression type zlib at 104, then the end-of-extensions marker at 112: all zeroes.
  return h;
}
