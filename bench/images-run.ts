import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { strata } from './chain-cli.js';
import type { DataImage } from './migrate-data.js';
import { serveVolume } from './nbd-servers.js';

const run = promisify(execFile);

/**
 * Import and export throughput per image format: `strata import` of FILE
 * into a new volume against `qemu-img convert -n FILE nbd://…` into a new
 * volume's export, and `strata export --format F` against `qemu-img convert
 * -O F nbd://… FILE` from the volume's export. Same files, same pool, the two
 * tools alternating which goes first in each round.
 */
export interface ImageCase {
  /** The row's name: raw, qcow2, vmdk streamOptimized… */
  name: string;
  format: 'raw' | 'qcow2' | 'vmdk' | 'vhd';
  subformat?: string;
  ext: string;
}

export const CASES: ImageCase[] = [
  { name: 'raw', format: 'raw', ext: 'raw' },
  { name: 'qcow2', format: 'qcow2', ext: 'qcow2' },
  { name: 'vmdk streamOptimized', format: 'vmdk', subformat: 'streamOptimized', ext: 'vmdk' },
  { name: 'vmdk monolithicSparse', format: 'vmdk', subformat: 'monolithicSparse', ext: 'vmdk' },
  { name: 'vhd dynamic', format: 'vhd', subformat: 'dynamic', ext: 'vhd' },
];

export type ImageTool = 'strata' | 'qemu-img convert';
export type Direction = 'import' | 'export';

export interface ImageSample {
  case: string;
  direction: Direction;
  tool: ImageTool;
  round: number;
  seconds: number;
  /** Data bytes of the disk per second, 10^6 B/s. */
  mbPerSec: number;
}

export interface ImagesReport {
  size: number;
  dataBytes: number;
  samples: ImageSample[];
  /** Bytes of each case's image file. */
  fileBytes: Record<string, number>;
  /** Per case: whether Strata's import read the same as the image (qemu-img compare). */
  sameData: Record<string, boolean>;
}

const qemuFormat = (c: ImageCase): string => (c.format === 'vhd' ? 'vpc' : c.format);
const subOpts = (c: ImageCase): string[] => (c.subformat ? ['-o', `subformat=${c.subformat}`] : []);

async function timed(fn: () => Promise<unknown>): Promise<number> {
  await run('sync');
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

export async function runImagesBench(dir: string, image: DataImage, cases: ImageCase[], rounds: number, log: (line: string) => void): Promise<ImagesReport> {
  const home = path.join(dir, 'images-home');
  const report: ImagesReport = { size: image.size, dataBytes: image.dataBytes, samples: [], fileBytes: {}, sameData: {} };
  await strata(home, 'pool', 'create', 'p', '--size', String(3 * image.size + 2 ** 30));
  await strata(home, 'import', 'p/src', image.path);
  const sample = (c: ImageCase, direction: Direction, tool: ImageTool, round: number, seconds: number): void => {
    const s: ImageSample = { case: c.name, direction, tool, round, seconds, mbPerSec: image.dataBytes / seconds / 1e6 };
    report.samples.push(s);
    log(`${c.name}, ${direction}, round ${round + 1}/${rounds}, ${tool}: ${seconds.toFixed(2)} s, ${s.mbPerSec.toFixed(0)} MB/s`);
  };
  for (const c of cases) {
    const file = path.join(dir, `disk-${c.name.replace(/ /g, '-')}.${c.ext}`);
    await run('qemu-img', ['convert', '-f', 'raw', '-O', qemuFormat(c), ...subOpts(c), image.path, file]);
    report.fileBytes[c.name] = fs.statSync(file).size;
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-f', qemuFormat(c), file])).stdout) as { 'virtual-size': number };
    const virtual = info['virtual-size'];
    const out = path.join(dir, `out.${c.ext}`);
    for (let round = 0; round < rounds; round++) {
      const order: ImageTool[] = round % 2 === 0 ? ['strata', 'qemu-img convert'] : ['qemu-img convert', 'strata'];
      for (const tool of order) {
        if (tool === 'strata') {
          sample(c, 'import', tool, round, await timed(() => strata(home, 'import', 'p/imp', file)));
          if (report.sameData[c.name] === undefined) report.sameData[c.name] = await compare(home, file, qemuFormat(c));
        } else {
          await strata(home, 'volume', 'create', 'p/imp', String(virtual));
          const server = await serveVolume({ home, pool: 'p', volume: 'imp' });
          try {
            // --target-is-zero: the volume is new and thin, as the one strata import creates.
            sample(c, 'import', tool, round, await timed(() => run('qemu-img', ['convert', '-n', '--target-is-zero', '-f', qemuFormat(c), '-O', 'raw', file, server.uri])));
          } finally {
            await server.stop();
          }
        }
        await strata(home, 'volume', 'delete', 'p/imp');
      }
      for (const tool of order) {
        if (tool === 'strata') {
          sample(c, 'export', tool, round, await timed(() => strata(home, 'export', 'p/src', out, '--format', c.format, ...(c.subformat ? ['--subformat', c.subformat] : []))));
        } else {
          const server = await serveVolume({ home, pool: 'p', volume: 'src' });
          try {
            sample(c, 'export', tool, round, await timed(() => run('qemu-img', ['convert', '-f', 'raw', '-O', qemuFormat(c), ...subOpts(c), server.uri, out])));
          } finally {
            await server.stop();
          }
        }
        fs.rmSync(out, { force: true });
      }
    }
    fs.rmSync(file, { force: true });
  }
  return report;
}

/** Whether the volume Strata imported reads as the image, by qemu-img compare over its export. */
async function compare(home: string, file: string, format: string): Promise<boolean> {
  const server = await serveVolume({ home, pool: 'p', volume: 'imp' });
  try {
    await run('qemu-img', ['compare', '-f', format, '-F', 'raw', file, server.uri]);
    return true;
  } catch {
    return false;
  } finally {
    await server.stop();
  }
}
