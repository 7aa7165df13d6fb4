/**
 * Parity arithmetic throughput on one core: XOR (RAID 5 P), P+Q generation
 * (RAID 6) and reconstruction of one and two lost data blocks, in GB/s of
 * data processed. Medians of 5 runs.
 *
 *   node dist/bench/raid-parity.js [--disks 6] [--chunk 512K]
 */
import { reconstruct } from '../src/raid/reconstruct.js';
import { computeP, computePQ } from '../src/raid/syndrome.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = process.argv[i + 1]!;
  const m = /^(\d+)([KM]?)$/i.exec(v);
  if (!m) throw new Error(`bad --${name} ${v}`);
  return Number(m[1]) * (m[2]?.toUpperCase() === 'K' ? 1024 : m[2]?.toUpperCase() === 'M' ? 1024 * 1024 : 1);
}

const disks = arg('disks', 6);
const chunk = arg('chunk', 512 * 1024);
const rounds = 5;

function block(seed: number): Buffer {
  const b = Buffer.allocUnsafeSlow(chunk);
  let x = seed | 1;
  for (let i = 0; i < chunk; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Runs fn over the data repeatedly for ~300 ms; returns GB/s of data blocks processed. */
function measure(dataBytes: number, fn: () => void): number {
  const results: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let n = 0;
    const start = process.hrtime.bigint();
    let elapsed = 0;
    do {
      fn();
      n++;
      elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    } while (elapsed < 0.3);
    results.push((n * dataBytes) / elapsed / 1e9);
  }
  return median(results);
}

const d5 = disks - 1;
const d6 = disks - 2;
const data = Array.from({ length: disks }, (_, i) => block(i + 1));
const P = Buffer.allocUnsafeSlow(chunk);
const Q = Buffer.allocUnsafeSlow(chunk);
const s1 = Buffer.allocUnsafeSlow(chunk);
const s2 = Buffer.allocUnsafeSlow(chunk);

const rows: Array<[string, number]> = [];
rows.push([`RAID 5 P (XOR) over ${d5} data blocks`, measure(d5 * chunk, () => computeP(data.slice(0, d5), P, chunk))]);
rows.push([`RAID 6 P+Q over ${d6} data blocks`, measure(d6 * chunk, () => computePQ(data.slice(0, d6), P, Q, chunk))]);
const stripe6 = [...data.slice(0, d6), P, Q];
computePQ(data.slice(0, d6), P, Q, chunk);
rows.push([`RAID 5 rebuild 1 data block (${d5} data)`, measure(d5 * chunk, () => reconstruct([...data.slice(0, d5), P], d5, 1, [1], chunk, s1, s2))]);
rows.push([`RAID 6 rebuild 1 data block from Q (${d6} data)`, measure(d6 * chunk, () => reconstruct(stripe6, d6, 2, [1, d6], chunk, s1, s2))]);
rows.push([`RAID 6 rebuild 2 data blocks (${d6} data)`, measure(d6 * chunk, () => reconstruct(stripe6, d6, 2, [0, 2], chunk, s1, s2))]);

console.log(`parity arithmetic, ${disks} members, chunk ${chunk / 1024} KiB, one core, median of ${rounds}`);
for (const [name, gbs] of rows) console.log(`  ${name.padEnd(48)} ${gbs.toFixed(2)} GB/s`);
