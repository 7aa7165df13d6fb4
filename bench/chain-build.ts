import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { BlockDevice } from '../src/blockdev/index.js';
import { withPool } from '../src/host/open-pool.js';
import { createSnapshots } from '../src/snapshot/index.js';
import { inParallel } from './chain-create.js';
import { layerPattern, type Run } from './chain-layout.js';
import { createPoolVolume } from './nbd-servers.js';

const runAsync = promisify(execFile);

/** Pool and volume of every chain the benchmark builds: `strata serve` then exports `bench`, as the NBD benchmark's setup serves it. */
export const CHAIN_POOL = 'bench';
export const CHAIN_VOLUME = 'bench';

/**
 * A Strata pool in its own home whose volume is the top of a chain of
 * `layers.length` layers: layer k's runs are written, then (below the top) a
 * snapshot freezes it. Built in-process through the library; served later
 * with `strata serve`.
 */
export async function buildStrataChain(home: string, size: number, grain: number, layers: Run[][]): Promise<void> {
  // Room for redirect-on-write: a grain smaller than a cluster copies the rest of the cluster (sparse file, so only what is written costs).
  createPoolVolume({ home, pool: CHAIN_POOL, volume: CHAIN_VOLUME }, size, 16 * size + 2 ** 30);
  await withPool(home, CHAIN_POOL, { readOnly: false }, async ({ pool }) => {
    const vol = await pool.openVolume(CHAIN_VOLUME);
    try {
      for (let k = 0; k < layers.length; k++) {
        await writeRuns(vol, layers[k]!, grain, layerPattern(k));
        if (k < layers.length - 1) await createSnapshots(pool, [{ volume: CHAIN_VOLUME, snapshot: `l${k}` }]);
      }
      await vol.flush();
    } finally {
      await vol.close();
    }
  });
}

async function writeRuns(vol: BlockDevice, runs: Run[], grain: number, pattern: number): Promise<void> {
  const longest = runs.reduce((m, r) => Math.max(m, r.count), 0);
  // Long runs (a shallow chain) go in pieces of at most 1 MiB, as a client would send them.
  const maxBlocks = Math.max(1, Math.floor((1 << 20) / grain));
  const buf = Buffer.alloc(Math.min(longest, maxBlocks) * grain, pattern);
  const pieces: Array<{ off: number; len: number }> = [];
  for (const r of runs) {
    for (let b = r.block; b < r.block + r.count; b += maxBlocks) pieces.push({ off: b * grain, len: Math.min(maxBlocks, r.block + r.count - b) * grain });
  }
  await inParallel(pieces, 16, (p) => vol.write(buf.subarray(0, p.len), p.off));
}

/**
 * The same layout as a qcow2 backing chain: l0.qcow2 … l{n-1}.qcow2, each
 * made with `qemu-img create -b prev -F qcow2` and written by qemu-io.
 * A grain below qcow2's 64 KiB cluster needs sub-clusters (extended_l2):
 * without them each 4 KiB write would copy its whole cluster up from the
 * backing files, so the layers would no longer hold just their slice.
 * Returns the top file.
 */
export async function buildQcowChain(dir: string, size: number, grain: number, layers: Run[][]): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  const opts = grain < 64 * 1024 ? ['-o', 'cluster_size=64k,extended_l2=on'] : ['-o', 'cluster_size=64k'];
  let prev: string | undefined;
  for (let k = 0; k < layers.length; k++) {
    const file = path.join(dir, `l${k}.qcow2`);
    // -u: qemu-img need not open the chain below to make a layer on it (the size is given).
    const backing = prev ? ['-u', '-b', path.basename(prev), '-F', 'qcow2'] : [];
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...opts, ...backing, file, String(size)], { stdio: 'pipe' });
    await qemuIoWrite(file, layers[k]!, grain, layerPattern(k));
    prev = file;
  }
  return prev!;
}

/**
 * One qemu-io process per layer, its write commands on stdin (`-t unsafe`:
 * no flush per write; the chain is built once). The layer is opened
 * without its backing chain, or building a deep chain would open k files
 * for layer k: the writes cover whole sub-clusters (or clusters), so
 * nothing below is ever read.
 */
function qemuIoWrite(file: string, runs: Run[], grain: number, pattern: number): Promise<void> {
  const alone = `json:${JSON.stringify({ driver: 'qcow2', file: { driver: 'file', filename: file }, backing: null })}`;
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-io', ['-t', 'unsafe', alone], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      if (stderr.length < 8192) stderr += c.toString();
    });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 && stderr.trim() === '' ? resolve() : reject(new Error(`qemu-io on ${file} exited with ${code}: ${stderr.trim()}`))));
    const lines = runs.map((r) => `write -q -P ${pattern} ${r.block * grain} ${r.count * grain}\n`);
    lines.push('quit\n');
    child.stdin.end(lines.join(''));
  });
}

/** Whether the Strata export and the qcow2 top read the same bytes (qemu-img compare, the whole disk; -U: qemu-nbd holds the image). */
export async function sameContents(strataUri: string, qcowTop: string): Promise<{ same: boolean; detail: string }> {
  try {
    const { stdout } = await runAsync('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'qcow2', strataUri, qcowTop], { maxBuffer: 1 << 20 });
    return { same: true, detail: stdout.trim() };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return { same: false, detail: (e.stdout ?? '').trim() || (e.stderr ?? '').trim() || e.message };
  }
}
