/**
 * In-process throughput of a thin volume (pool format with checksums and the
 * journal) against the bare file device on the same disk, alternating, medians
 * of rounds. Usage:
 *   node dist/bench/volume.js [--written 8G] [--seconds 3] [--rounds 3] [--dir DIR] [--cache 64M] [--direct] [--only TEXT]
 * The volume is 1 TiB; `--written` of it is filled first, and reads hit it.
 * `--direct` opens both the bare file and the pool file with O_DIRECT;
 * `--only TEXT` runs just the jobs whose name contains TEXT (e.g. `--only sequential`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { FileDevice, type BlockDevice } from '../src/blockdev/index.js';
import { Pool } from '../src/qcowlike/index.js';
import { formatSize, parseSize } from '../bin/size.js';
import { JOBS, runJob, type Job } from './blockdev.js';
import { fmtRate, median } from './stats.js';

const ALLOCATING: Job = { name: '4K random write QD16, allocating', unit: 'IOPS', blockSize: 4096, write: true, random: true, depth: 16 };

async function fill(dev: BlockDevice, bytes: number): Promise<void> {
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
  for (let off = 0; off < bytes; off += chunk.length) await dev.write(chunk, off);
  await dev.flush();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      written: { type: 'string', default: '8G' },
      seconds: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '3' },
      dir: { type: 'string' },
      cache: { type: 'string', default: '64M' },
      direct: { type: 'boolean', default: false },
      only: { type: 'string' },
    },
  });
  const written = parseSize(values.written!);
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const dir = fs.mkdtempSync(path.join(values.dir ?? os.tmpdir(), 'strata-bench-'));
  const direct = values.direct!;
  const bare = FileDevice.create(path.join(dir, 'bare.img'), { size: written * (rounds + 2), direct });
  const poolDev = FileDevice.create(path.join(dir, 'bench.pool'), { size: written * (rounds + 2) + (1 << 30), direct });
  const pool = await Pool.create(poolDev, { cacheBytes: parseSize(values.cache!) });
  await pool.createVolume('bench', 2 ** 40);
  const vol = await pool.openVolume('bench');
  try {
    process.stderr.write(`filling ${formatSize(written)} on the 1T volume…\n`);
    await fill(vol, written);
    // First, alone in the process: memory stays bounded whatever the volume size: random 4K reads over the whole 1 TiB and over the data.
    const start = process.memoryUsage().rss;
    let peak = start;
    let n = 0;
    const sampled: BlockDevice = Object.create(vol) as BlockDevice;
    sampled.read = (b, o) => {
      if ((++n & 4095) === 0) peak = Math.max(peak, process.memoryUsage().rss);
      return vol.read(b, o);
    };
    await runJob(sampled, JOBS[0]!, 2 ** 40, seconds, 7);
    await runJob(sampled, JOBS[0]!, written, seconds, 8);
    process.stderr.write(`filling ${formatSize(written)} on the bare file…\n`);
    await fill(bare, written);
    const table: string[] = ['| job | bare file | volume | ratio |', '|---|---|---|---|'];
    for (const job of [...JOBS, ALLOCATING].filter((j) => !values.only || j.name.includes(values.only))) {
      const a: number[] = [];
      const b: number[] = [];
      for (let r = 0; r < rounds; r++) {
        const span = written;
        if (job === ALLOCATING) {
          // Allocating writes land past the filled part, a fresh region each round, on both: the
          // host file system fills a hole under each of them, which costs the bare file as much.
          a.push(await runJob(offsetView(bare, written * (1 + r)), job, written, seconds, r + 1));
          b.push(await runJob(offsetView(vol, written * (1 + r)), job, written, seconds, r + 1));
        } else {
          a.push(await runJob(bare, job, span, seconds, r + 1));
          b.push(await runJob(vol, job, span, seconds, r + 1));
        }
        await vol.flush();
      }
      const ma = median(a);
      const mb = median(b);
      table.push(`| ${job.name} | ${fmtRate(ma, job.unit)} ${job.unit} | ${fmtRate(mb, job.unit)} ${job.unit} | ${(mb / ma).toFixed(2)} |`);
      process.stderr.write(`${table[table.length - 1]}\n`);
    }
    console.log(`${direct ? 'direct I/O (O_DIRECT)' : 'buffered I/O (host page cache)'}, ${formatSize(written)} written, medians of ${rounds} rounds of ${seconds} s\n`);
    console.log(table.join('\n'));
    console.log(`\nRSS during 1 TiB random reads: peak ${formatSize(peak)} (${formatSize(start)} when they began; cache budget ${values.cache})`);
  } finally {
    await vol.close();
    await pool.close();
    await bare.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The same device seen from `base` on, so a job's offsets land in a region of our choosing. */
function offsetView(dev: BlockDevice, base: number): BlockDevice {
  return {
    name: dev.name,
    size: dev.size - base,
    blockSize: dev.blockSize,
    preferredBlockSize: dev.preferredBlockSize,
    discardZeroes: dev.discardZeroes,
    readOnly: dev.readOnly,
    read: (b, o) => dev.read(b, o + base),
    write: (b, o, w) => dev.write(b, o + base, w),
    flush: () => dev.flush(),
    discard: (o, l) => dev.discard(o + base, l),
    writeZeroes: (o, l, w) => dev.writeZeroes(o + base, l, w),
    close: () => dev.close(),
  };
}

await main();
