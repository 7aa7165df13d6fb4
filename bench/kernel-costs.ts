/**
 * What the host kernel charges for the calls every server here makes, on
 * this machine, with no server in the way: the floor under each benchmark
 * job. Usage: node dist/bench/kernel-costs.js [--dir DIR] [--size 512M]
 *
 * Buffered writes cost most when they dirty a clean page of the page cache
 * (a random overwrite after a flush); a page dirty already costs little. Any
 * server that keeps its data in a file pays these, whatever it is written in.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { alignedMemory } from '../src/blockdev/aligned-buffers.js';
import { formatSize, parseSize } from '../bin/size.js';
import { markdownTable, median } from './stats.js';

const KIB4 = 4096;
const MIB = 1 << 20;

function timeCalls(n: number, call: (i: number) => void): number {
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) call(i);
  return Number(process.hrtime.bigint() - t) / 1000 / n;
}

function randomBlock(size: number, block: number): number {
  return Math.floor(Math.random() * (size / block)) * block;
}

function main(): void {
  const { values } = parseArgs({ options: { dir: { type: 'string' }, size: { type: 'string', default: '512M' }, rounds: { type: 'string', default: '3' } } });
  const size = parseSize(values.size!);
  const rounds = Number(values.rounds);
  const dir = fs.mkdtempSync(path.join(values.dir ?? os.tmpdir(), 'strata-kernel-'));
  const file = path.join(dir, 'costs.img');
  try {
    const fd = fs.openSync(file, 'w+');
    const mib = Buffer.alloc(MIB, 0x5a);
    for (let off = 0; off < size; off += MIB) fs.writeSync(fd, mib, 0, MIB, off);
    const page = Buffer.alloc(KIB4, 7);
    const samples = new Map<string, number[]>();
    const add = (what: string, us: number) => samples.set(what, [...(samples.get(what) ?? []), us]);
    for (let r = 0; r < rounds; r++) {
      // Clean pages first: everything written so far goes to the disk.
      fs.fdatasyncSync(fd);
      execFileSync('sync');
      add('4K pwrite, random, dirties a clean cached page', timeCalls(20000, () => fs.writeSync(fd, page, 0, KIB4, randomBlock(size, KIB4))));
      add('4K pwrite, the same page again (dirty already)', timeCalls(20000, () => fs.writeSync(fd, page, 0, KIB4, 0)));
      add('4K pread, random, from the page cache', timeCalls(20000, () => fs.readSync(fd, page, 0, KIB4, randomBlock(size, KIB4))));
      fs.fdatasyncSync(fd);
      add('1M pwrite, sequential, over clean cached pages', timeCalls(size / MIB / 2, (i) => fs.writeSync(fd, mib, 0, MIB, i * MIB)));
      add('1M pwrite, the same pages again (dirty already)', timeCalls(size / MIB / 2, (i) => fs.writeSync(fd, mib, 0, MIB, i * MIB)));
      add('1M pread, sequential, from the page cache', timeCalls(size / MIB / 2, (i) => fs.readSync(fd, mib, 0, MIB, i * MIB)));
      add('fdatasync after 64 random 4K writes', timeCalls(50, () => {
        for (let k = 0; k < 64; k++) fs.writeSync(fd, page, 0, KIB4, randomBlock(size, KIB4));
        fs.fdatasyncSync(fd);
      }));
    }
    fs.closeSync(fd);
    const direct = directCosts(file, size, rounds);
    const rows = [...samples, ...direct].map(([what, us]) => [what, median(us).toFixed(1)]);
    console.log(`Kernel costs on this machine (${os.cpus().length} CPUs, a ${formatSize(size)} file in ${dir}; medians of ${rounds} rounds; load ${os.loadavg()[0]!.toFixed(1)})\n`);
    console.log(markdownTable(['call', 'µs per call'], rows));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** O_DIRECT calls, where the file system allows them (tmpfs does not). */
function directCosts(file: string, size: number, rounds: number): Array<[string, number[]]> {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_DIRECT);
  } catch {
    return [];
  }
  const buf = Buffer.from(alignedMemory(MIB));
  const page = buf.subarray(0, KIB4);
  const w: number[] = [];
  const r4: number[] = [];
  const w1: number[] = [];
  for (let r = 0; r < rounds; r++) {
    w.push(timeCalls(2000, () => fs.writeSync(fd, page, 0, KIB4, randomBlock(size, KIB4))));
    r4.push(timeCalls(2000, () => fs.readSync(fd, page, 0, KIB4, randomBlock(size, KIB4))));
    w1.push(timeCalls(64, (i) => fs.writeSync(fd, buf, 0, MIB, i * MIB)));
  }
  fs.closeSync(fd);
  return [
    ['O_DIRECT 4K pwrite, random', w],
    ['O_DIRECT 4K pread, random', r4],
    ['O_DIRECT 1M pwrite, sequential', w1],
  ];
}

main();
