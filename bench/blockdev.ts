/**
 * In-process throughput of the bare file device: the floor every layer above
 * is compared against. Usage: node dist/bench/blockdev.js [--size 1G] [--seconds 3] [--rounds 3] [--dir DIR]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { FileDevice, Rng, type BlockDevice } from '../src/blockdev/index.js';
import { parseSize } from '../bin/size.js';
import { fmtRate, median } from './stats.js';

export interface Job {
  name: string;
  unit: 'IOPS' | 'MB/s';
  blockSize: number;
  write: boolean;
  random: boolean;
  depth: number;
}

export const JOBS: Job[] = [
  { name: '4K random read QD16', unit: 'IOPS', blockSize: 4096, write: false, random: true, depth: 16 },
  { name: '4K random write QD16', unit: 'IOPS', blockSize: 4096, write: true, random: true, depth: 16 },
  { name: '4K random read QD1', unit: 'IOPS', blockSize: 4096, write: false, random: true, depth: 1 },
  { name: '1M sequential read QD4', unit: 'MB/s', blockSize: 1 << 20, write: false, random: false, depth: 4 },
  { name: '1M sequential write QD4', unit: 'MB/s', blockSize: 1 << 20, write: true, random: false, depth: 4 },
];

/** Runs one job for `seconds` over the first `span` bytes of the device; returns IOPS or MB/s. */
export async function runJob(dev: BlockDevice, job: Job, span: number, seconds: number, seed = 1): Promise<number> {
  const rng = new Rng(seed);
  const blocks = Math.floor(span / job.blockSize);
  let next = 0;
  let ops = 0;
  const deadline = performance.now() + seconds * 1000;
  const worker = async (): Promise<void> => {
    const buf = Buffer.alloc(job.blockSize, 0x6b);
    while (performance.now() < deadline) {
      const block = job.random ? rng.below(blocks) : next++ % blocks;
      if (job.write) await dev.write(buf, block * job.blockSize);
      else await dev.read(buf, block * job.blockSize);
      ops++;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: job.depth }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  return job.unit === 'IOPS' ? ops / elapsed : (ops * job.blockSize) / elapsed / 1e6;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { size: { type: 'string', default: '1G' }, seconds: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' }, dir: { type: 'string' } },
  });
  const size = parseSize(values.size!);
  const dir = fs.mkdtempSync(path.join(values.dir ?? os.tmpdir(), 'strata-bench-'));
  const file = path.join(dir, 'bare.img');
  const dev = FileDevice.create(file, { size });
  try {
    const fill = Buffer.alloc(1 << 20, 0x33);
    for (let off = 0; off < size; off += fill.length) await dev.write(fill, off);
    await dev.flush();
    console.log(`| job | file device (median of ${values.rounds}) |\n|---|---|`);
    for (const job of JOBS) {
      const results: number[] = [];
      for (let r = 0; r < Number(values.rounds); r++) results.push(await runJob(dev, job, size, Number(values.seconds), r + 1));
      console.log(`| ${job.name} | ${fmtRate(median(results), job.unit)} ${job.unit} |`);
    }
  } finally {
    await dev.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
