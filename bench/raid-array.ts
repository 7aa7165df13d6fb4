/**
 * Array throughput per RAID level against RAID 0 over the same number of
 * members: 4 KiB random (QD16) and 1 MiB sequential (QD4) reads and writes,
 * degraded reads, and rebuild rate with and without foreground writes.
 * Members are in memory (this measures the RAID layer's own cost) or, with
 * --files, sparse files in a scratch directory (page cache), or with
 * --direct, such files opened with O_DIRECT (the disk itself). Medians of
 * --rounds runs of --secs seconds each.
 *
 *   node dist/bench/raid-array.js [--chunk 64K] [--size 128M] [--secs 1.5] [--rounds 3] [--files | --direct] [--only 5]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FileDevice, MemoryDevice, type BlockDevice } from '../src/blockdev/index.js';
import { createArray, DATA_OFFSET, memberDataNeeded, type RaidArray, type RaidLevel } from '../src/raid/index.js';

function opt(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}
function size(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)$/i.exec(text);
  if (!m) throw new Error(`bad size ${text}`);
  return Math.round(Number(m[1]) * ({ '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 } as Record<string, number>)[m[2]!.toUpperCase()]!);
}

const CHUNK = size(opt('chunk') ?? '64K');
const SIZE = size(opt('size') ?? '128M');
const SECS = Number(opt('secs') ?? '1.5');
const ROUNDS = Number(opt('rounds') ?? '3');
const DIRECT = process.argv.includes('--direct');
const FILES = DIRECT || process.argv.includes('--files');
const ONLY = opt('only');

interface Shape {
  level: RaidLevel;
  members: number;
}
const ALL: Shape[] = [
  { level: 1, members: 2 },
  { level: 5, members: 4 },
  { level: 6, members: 6 },
  { level: 10, members: 4 },
];
const SHAPES = ALL.filter((s) => !ONLY || String(s.level) === ONLY);

const scratch = FILES ? fs.mkdtempSync(path.join(os.tmpdir(), 'strata-raid-bench-')) : '';
let seq = 0;

function member(bytes: number): BlockDevice {
  if (!FILES) return new MemoryDevice({ size: bytes });
  return FileDevice.create(path.join(scratch, `m${seq++}.img`), { size: bytes, direct: DIRECT });
}

async function build(level: RaidLevel, n: number, arraySize: number): Promise<RaidArray> {
  const bytes = DATA_OFFSET + memberDataNeeded(level, n, CHUNK, arraySize);
  const members = Array.from({ length: n }, () => member(bytes));
  return createArray({ level, members, chunk: CHUNK, size: arraySize });
}

/** The largest size both a level and RAID 0 over the same members hold, in whole MiB. */
function commonSize(): number {
  return Math.floor(SIZE / (1024 * 1024)) * 1024 * 1024;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

type Job = { bs: number; qd: number; random: boolean; write: boolean };

/** Runs `qd` request loops for SECS; resolves to bytes per second. */
async function run(dev: BlockDevice, job: Job, secs = SECS): Promise<number> {
  const blocks = Math.floor(dev.size / job.bs);
  let next = 0;
  let bytes = 0;
  const end = performance.now() + secs * 1000;
  let rnd = 12345;
  const worker = async (): Promise<void> => {
    const buf = Buffer.alloc(job.bs, 0x5c);
    while (performance.now() < end) {
      let b: number;
      if (job.random) {
        rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0;
        b = rnd % blocks;
      } else {
        b = next++ % blocks;
      }
      if (job.write) await dev.write(buf, b * job.bs);
      else await dev.read(buf, b * job.bs);
      bytes += job.bs;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: job.qd }, worker));
  return bytes / ((performance.now() - start) / 1000);
}

async function fill(dev: RaidArray): Promise<void> {
  const buf = Buffer.alloc(1024 * 1024, 0x3a);
  for (let o = 0; o < dev.size; o += buf.length) await dev.write(buf.subarray(0, Math.min(buf.length, dev.size - o)), o);
  await dev.flush();
}

const JOBS: Array<[string, Job]> = [
  ['4K randread QD16', { bs: 4096, qd: 16, random: true, write: false }],
  ['4K randwrite QD16', { bs: 4096, qd: 16, random: true, write: true }],
  ['1M seqread QD4', { bs: 1024 * 1024, qd: 4, random: false, write: false }],
  ['1M seqwrite QD4', { bs: 1024 * 1024, qd: 4, random: false, write: true }],
];

function fmt(bps: number, bs: number): string {
  return bs === 4096 ? `${(bps / 4096 / 1000).toFixed(1)}k IOPS` : `${(bps / 1e6).toFixed(0)} MB/s`;
}

async function main(): Promise<void> {
  console.log(`RAID array throughput, ${DIRECT ? 'file (O_DIRECT)' : FILES ? 'file' : 'memory'} members, chunk ${CHUNK / 1024} KiB, ${SIZE / 1024 / 1024} MiB, median of ${ROUNDS} × ${SECS}s`);
  for (const s of SHAPES) {
    const arraySize = commonSize();
    const raid = await build(s.level, s.members, arraySize);
    const raid0 = await build(0, s.members, arraySize);
    await fill(raid);
    await fill(raid0);
    // Full-stripe writes: requests of exactly one stripe's data, stripe-aligned.
    const stripe = s.level === 5 || s.level === 6 ? CHUNK * (s.members - (s.level === 5 ? 1 : 2)) : CHUNK * s.members;
    const jobs: Array<[string, Job]> = [...JOBS, [`full-stripe write (${stripe / 1024} KiB) QD4`, { bs: stripe, qd: 4, random: false, write: true }]];
    console.log(`\nRAID ${s.level} over ${s.members} vs RAID 0 over ${s.members}`);
    for (const [name, job] of jobs) {
      const a: number[] = [];
      const b: number[] = [];
      // A short unmeasured pass each first so the JIT has compiled both paths.
      await run(raid, { ...job }, 0.3);
      await run(raid0, { ...job }, 0.3);
      for (let r = 0; r < ROUNDS; r++) {
        // Alternate which goes first: noise from the shared machine falls on both.
        if (r % 2 === 0) {
          a.push(await run(raid, job));
          b.push(await run(raid0, job));
        } else {
          b.push(await run(raid0, job));
          a.push(await run(raid, job));
        }
      }
      const ma = median(a);
      const mb = median(b);
      console.log(`  ${name.padEnd(34)} RAID ${String(s.level).padEnd(2)} ${fmt(ma, job.bs).padStart(13)}   RAID 0 ${fmt(mb, job.bs).padStart(13)}   ratio ${(ma / mb).toFixed(2)}`);
    }
    await raid0.close();

    await raid.fail(0);
    for (const [name, job] of [JOBS[0]!, JOBS[2]!]) {
      const xs: number[] = [];
      for (let r = 0; r < ROUNDS; r++) xs.push(await run(raid, job));
      console.log(`  degraded (member 0 failed) ${name.padEnd(19)} ${fmt(median(xs), job.bs).padStart(13)}`);
    }

    const bytes = DATA_OFFSET + memberDataNeeded(s.level, s.members, CHUNK, arraySize);
    await raid.replace(0, member(bytes));
    let t = performance.now();
    await raid.rebuild();
    const alone = (raid.geometry.rows * CHUNK) / ((performance.now() - t) / 1000);
    await raid.fail(0);
    await raid.replace(0, member(bytes));
    t = performance.now();
    const rebuilding = raid.rebuild();
    let fg = 0;
    let done = false;
    void rebuilding.then(() => (done = true));
    const buf = Buffer.alloc(4096, 1);
    let rnd = 99;
    const blocks = arraySize / 4096;
    const fgStart = performance.now();
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (!done) {
          rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0;
          await raid.write(buf, (rnd % blocks) * 4096);
          fg++;
          // Memory members complete in microtasks: yield so the rebuild's steps get turns.
          if ((fg & 15) === 0) await new Promise((r) => setImmediate(r));
        }
      }),
    );
    await rebuilding;
    const withFg = (raid.geometry.rows * CHUNK) / ((performance.now() - t) / 1000);
    const fgIops = fg / ((performance.now() - fgStart) / 1000);
    console.log(`  rebuild of one member: ${(alone / 1e6).toFixed(0)} MB/s alone, ${(withFg / 1e6).toFixed(0)} MB/s under 4K random writes QD8 (which ran at ${(fgIops / 1000).toFixed(1)}k IOPS)`);
    await raid.close();
  }
  if (FILES) fs.rmSync(scratch, { recursive: true, force: true });
}

await main();
