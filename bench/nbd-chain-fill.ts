import { spawn } from 'node:child_process';
import { strata } from './chain-cli.js';
import { layerPattern, sliceRuns, type Run } from './chain-layout.js';
import { prefill } from './nbd-fio.js';

/**
 * Lays a chain of `snapshots` snapshots under a served volume the way a user
 * would: the measured region is prefilled as usual and snapshotted, then
 * each further layer rewrites its own share of the region's clusters (a
 * random 1/snapshots of them, disjoint from the other layers' shares) over
 * NBD with qemu-io and is snapshotted with `strata snapshot create`. The
 * volume itself is left empty, so every read of the region finds its
 * cluster inherited from one of the snapshots, at depths spread evenly
 * over the whole chain, and every write lands on a cluster it must copy up.
 */
export interface ChainFill {
  home: string;
  pool: string;
  volume: string;
  uri: string;
  ioSize: number;
  clusterSize: number;
  snapshots: number;
}

export async function fillChain(c: ChainFill, log: (line: string) => void): Promise<void> {
  const clusters = Math.floor(c.ioSize / c.clusterSize);
  const shares = sliceRuns(clusters, c.snapshots, 64);
  const t0 = performance.now();
  await prefill(c.uri, c.ioSize);
  for (let k = 0; k < c.snapshots; k++) {
    // Share 0 keeps what the prefill wrote.
    if (k > 0) await qemuIoWrites(c.uri, shares[k]!, c.clusterSize, layerPattern(k));
    await strata(c.home, 'snapshot', 'create', `${c.pool}/${c.volume}@l${k}`);
    if ((k + 1) % 16 === 0) log(`  chain: ${k + 1}/${c.snapshots} snapshots (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }
}

/**
 * `strata snapshot revert` to the newest snapshot: the volume empty again.
 * One job's writes copy up nearly every cluster of the region (8 s of 4K
 * random writes hit each 64K cluster several times), which would leave the
 * later jobs reading the volume's own clusters instead of the chain's.
 */
export async function emptyOverChain(home: string, pool: string, volume: string, snapshots: number): Promise<void> {
  await strata(home, 'snapshot', 'revert', `${pool}/${volume}@l${snapshots - 1}`);
}

/** One qemu-io client over NBD, its write commands on stdin; it reports a failed write on stdout and still exits 0. */
function qemuIoWrites(uri: string, runs: Run[], grain: number, pattern: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-io', ['-f', 'raw', uri], { stdio: ['pipe', 'pipe', 'pipe'] });
    let said = '';
    const keep = (c: Buffer) => {
      if (said.length < 8192) said += c.toString();
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.once('error', reject);
    child.once('exit', (code) => {
      const trouble = said.replace(/qemu-io> /g, '').trim();
      if (code === 0 && trouble === '') resolve();
      else reject(new Error(`qemu-io on ${uri} exited with ${code}: ${trouble}`));
    });
    const lines = runs.map((r) => `write -q -P ${pattern} ${r.block * grain} ${r.count * grain}\n`);
    child.stdin.end(`${lines.join('')}quit\n`);
  });
}
