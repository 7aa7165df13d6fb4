import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { finished } from 'node:stream/promises';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { fileSource } from '../../src/image/byte-source.js';
import { fileSink, streamSink } from '../../src/image/file-sink.js';
import type { ContentRun, ImageContent } from '../../src/image/image-writer.js';
import { openQcow2 } from '../../src/image/qcow2/reader.js';
import { ClusterRuns } from '../../src/image/qcow2/cluster-runs.js';
import { writeQcow2 } from '../../src/image/qcow2/writer.js';
import { hasTool, tool } from '../nbd/support.js';
import { propertyRuns, scratchDir } from '../support/scratch.js';
import { decodeSource } from './support/decode.js';
import { qemuCompare } from './support/qemu.js';
import { seeded } from './support/random.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const haveQemu = hasTool('qemu-img');
const { dir, cleanup } = scratchDir('qcow2-write');
afterAll(cleanup);
const at = (name: string): string => path.join(dir, name);

type Piece = { length: number; kind: ContentRun['kind']; seed: number };

/** Content made of pieces laid end to end; data pieces hold seeded bytes, so reads are made, not stored. */
function contentOf(pieces: Piece[]): ImageContent & { runsList: ContentRun[] } {
  const runsList: ContentRun[] = [];
  let offset = 0;
  for (const p of pieces) {
    const prev = runsList.at(-1);
    if (prev && prev.kind === p.kind) prev.length += p.length;
    else runsList.push({ offset, length: p.length, kind: p.kind });
    offset += p.length;
  }
  const bytes = (start: number, length: number): Buffer => {
    const out = Buffer.alloc(length);
    let pos = 0;
    for (const p of pieces) {
      const from = Math.max(start, pos);
      const to = Math.min(start + length, pos + p.length);
      if (p.kind === 'data' && from < to) {
        const rand = seeded(p.seed);
        const whole = Buffer.alloc(p.length);
        for (let i = 0; i < p.length; i += 4) whole.writeUInt32LE(Math.floor(rand() * 2 ** 32), i);
        whole.copy(out, from - start, from - pos, to - pos);
      }
      pos += p.length;
    }
    return out;
  };
  return {
    size: offset,
    runsList,
    runs: async function* () {
      yield* runsList;
    },
    read: async (buf, off) => {
      bytes(off, buf.length).copy(buf);
    },
  };
}

/** The content as a sparse raw file, for qemu-img compare. */
async function rawFile(content: ImageContent & { runsList: ContentRun[] }, file: string): Promise<void> {
  const fd = fs.openSync(file, 'w');
  for (const run of content.runsList) {
    if (run.kind !== 'data') continue;
    const buf = Buffer.alloc(run.length);
    await content.read(buf, run.offset);
    fs.writeSync(fd, buf, 0, buf.length, run.offset);
  }
  fs.ftruncateSync(fd, content.size);
  fs.closeSync(fd);
}

async function writeFile(content: ImageContent, file: string, progress?: (done: number) => void): Promise<{ fileSize: number; dataBytes: number }> {
  const fd = fs.openSync(file, 'w');
  try {
    return await writeQcow2(content, fileSink(fd, file), progress ? { progress } : {});
  } finally {
    fs.closeSync(fd);
  }
}

async function writeStream(content: ImageContent, file: string): Promise<void> {
  const pipe = new PassThrough();
  const out = fs.createWriteStream(file);
  pipe.pipe(out);
  await writeQcow2(content, streamSink(pipe, file), {});
  pipe.end();
  await finished(out);
}

async function expectClean(file: string, raw: string): Promise<void> {
  const check = await tool('qemu-img', ['check', '--output=json', file]);
  const report = JSON.parse(check) as { 'check-errors': number; leaks?: number; corruptions?: number };
  expect([report['check-errors'], report.leaks ?? 0, report.corruptions ?? 0]).toEqual([0, 0, 0]);
  qemuCompare(file, 'qcow2', raw);
}

const sector = (n: number): number => n * 512;
const piece = fc.record({
  length: fc.oneof(fc.integer({ min: 1, max: 300 }).map(sector), fc.integer({ min: 1, max: 8 }).map((n) => n * 64 * KiB)),
  kind: fc.constantFrom<ContentRun['kind']>('data', 'zero', 'hole'),
  seed: fc.nat(),
});

describe.skipIf(!haveQemu)('qcow2 writer', () => {
  it('random content: qemu-img check is clean, qemu-img compare equals the source, our reader reads it back, a stream gets the same bytes', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(piece, { minLength: 1, maxLength: 24 }), async (pieces) => {
        const content = contentOf(pieces);
        const file = at(`w${n}.qcow2`);
        const raw = at(`w${n}.raw`);
        const streamed = at(`w${n++}.stream.qcow2`);
        await rawFile(content, raw);
        const result = await writeFile(content, file);
        expect(result.fileSize).toBe(fs.statSync(file).size);
        await expectClean(file, raw);
        const back = await decodeSource(fileSource(file), openQcow2);
        expect(back.bytes.equals(fs.readFileSync(raw))).toBe(true);
        // Holes and zero runs are never stored as data.
        expect(result.dataBytes).toBeLessThanOrEqual(content.runsList.filter((r) => r.kind === 'data').reduce((t, r) => t + r.length + 128 * KiB, 0));
        await writeStream(content, streamed);
        expect(fs.readFileSync(streamed).equals(fs.readFileSync(file))).toBe(true);
        for (const f of [file, raw, streamed]) fs.rmSync(f);
      }),
      { numRuns: propertyRuns(12, 6) },
    );
  });

  it('a sparse disk of several L2 ranges: zero runs become zero clusters, holes stay unallocated', async () => {
    const content = contentOf([
      { length: MiB, kind: 'data', seed: 1 },
      { length: 700 * MiB, kind: 'hole', seed: 0 },
      { length: 3 * MiB, kind: 'zero', seed: 0 },
      { length: 64 * KiB + 512, kind: 'data', seed: 2 },
      { length: 900 * MiB, kind: 'hole', seed: 0 },
      { length: 512, kind: 'data', seed: 3 },
    ]);
    const file = at('sparse.qcow2');
    const raw = at('sparse.raw');
    await rawFile(content, raw);
    const progress: number[] = [];
    const result = await writeFile(content, file, (done) => progress.push(done));
    await expectClean(file, raw);
    expect(progress.at(-1)).toBe(content.size);
    expect(progress.every((p, i) => i === 0 || p >= progress[i - 1]!)).toBe(true);
    const map = JSON.parse(await tool('qemu-img', ['map', '--output=json', file])) as { start: number; length: number; data: boolean; zero: boolean; present: boolean }[];
    const dataBytes = map.filter((m) => m.data).reduce((t, m) => t + m.length, 0);
    // The last sector shares its cluster with the 512 bytes before it, which end the disk.
    expect(dataBytes).toBe(MiB + 128 * KiB + 1024);
    expect(map.some((m) => m.present && m.zero && !m.data && m.start === 701 * MiB && m.length === 3 * MiB)).toBe(true);
    expect(result.fileSize).toBeLessThan(2 * MiB);
    // Our reader over the same file, checked range by range (the disk is too large to hold).
    const src = fileSource(file);
    const reader = await openQcow2(src);
    const zeroes: [number, number][] = [];
    await reader.decode({
      data: async (offset, buf) => {
        const want = Buffer.alloc(buf.length);
        await content.read(want, offset);
        expect(buf.equals(want)).toBe(true);
      },
      zero: async (offset, length) => {
        zeroes.push([offset, length]);
      },
    });
    expect(zeroes).toEqual([[701 * MiB, 3 * MiB]]);
    await src.close();
  });

  it('an empty disk and a disk of one sector', async () => {
    for (const [i, pieces] of [[{ length: 512, kind: 'hole', seed: 0 }], [{ length: 512, kind: 'data', seed: 9 }]].entries()) {
      const content = contentOf(pieces as Piece[]);
      const file = at(`tiny${i}.qcow2`);
      const raw = at(`tiny${i}.raw`);
      await rawFile(content, raw);
      await writeFile(content, file);
      await expectClean(file, raw);
    }
  });
});

describe('qcow2 writer layout', () => {
  it('content runs round out to clusters as a per-cluster model says: any data makes data, else any zero run makes zeroes', () => {
    const cs = 4096;
    fc.assert(
      fc.property(fc.array(fc.record({ length: fc.integer({ min: 1, max: 3 * cs }), kind: fc.constantFrom<ContentRun['kind']>('data', 'zero', 'hole') }), { maxLength: 40 }), (pieces) => {
        const runs = new ClusterRuns(cs);
        const model: number[] = [];
        let offset = 0;
        for (const p of pieces) {
          runs.add({ offset, length: p.length, kind: p.kind });
          const rank = p.kind === 'data' ? 2 : p.kind === 'zero' ? 1 : 0;
          for (let c = Math.floor(offset / cs); c < Math.ceil((offset + p.length) / cs); c++) model[c] = Math.max(model[c] ?? 0, rank);
          offset += p.length;
        }
        const got: number[] = [];
        for (let i = 0; i < runs.kind.length; i++) {
          expect(runs.start[i]!).toBeLessThan(runs.end[i]!);
          if (i > 0) expect(runs.start[i]!).toBeGreaterThanOrEqual(runs.end[i - 1]!);
          if (i > 0 && runs.start[i] === runs.end[i - 1]) expect(runs.kind[i]).not.toBe(runs.kind[i - 1]);
          for (let c = runs.start[i]!; c < runs.end[i]!; c++) got[c] = runs.kind[i]!;
        }
        for (let c = 0; c < model.length; c++) expect([c, got[c] ?? 0]).toEqual([c, model[c] ?? 0]);
      }),
      { numRuns: propertyRuns(300, 100) },
    );
  });
});
