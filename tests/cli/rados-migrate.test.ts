import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, startServe, tool, type ServeProcess } from '../nbd/support.js';
import { cephConf, radosPoolArgs, uniqueName } from '../support/ceph.js';
import { fioVerify, type FioVerifyJob } from '../support/fio-verify.js';
import { metricsUrl, metricValue, scrapeMetrics } from '../support/metrics.js';
import { scratchDir } from '../support/scratch.js';
import { inProcess, inProcessJson } from './in-process.js';
import { buildCli } from './strata.js';

/**
 * A volume with snapshots moves from a file pool to a pool on Ceph RADOS
 * and back, with `strata migrate` cold and `--online` under fio: after
 * each move every snapshot is byte for byte what it was (qemu-img compare
 * against copies made before), what fio wrote verifies, and both pools
 * check clean.
 */
const MiB = 1024 * 1024;
const conf = cephConf();
const tools = ['fio', 'qemu-io', 'qemu-img', 'nbdcopy'].every((t) => hasTool(t));

/** A node of `snapshot list --json`'s tree. */
interface ChainNode {
  kind: string;
  name: string;
  children: ChainNode[];
}

/** The snapshots in a chain's tree, by their names after `VOL@`. */
function snapshotNames(node: ChainNode): string[] {
  const own = node.kind === 'snapshot' ? [node.name.slice(node.name.indexOf('@') + 1)] : [];
  return [...own, ...node.children.flatMap(snapshotNames)];
}

interface Moved {
  source: string;
  target: string;
  snapshots?: string[];
}

describe.skipIf(conf === undefined || !tools)('volumes moving between a file pool and a RADOS pool', () => {
  const { dir, cleanup } = scratchDir('rados-migrate');
  const home = path.join(dir, 'h');
  const local = 'local';
  const rados = uniqueName('move');
  let srv: ServeProcess | undefined;
  const uri = (name: string): string => `nbd://${new URL(srv!.uri).host}/${name}`;
  const serve = async (...pools: string[]): Promise<void> => void (srv = await startServe(['--home', home, ...pools, '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0']));
  /** Write requests the server answered on an export so far. */
  const writes = async (name: string): Promise<number> => metricValue(await scrapeMetrics(metricsUrl(srv!)), 'strata_export_requests_total', { export: name, op: 'write' });
  const stop = async (): Promise<void> => {
    expect(await srv?.stop()).toBe(0);
    srv = undefined;
  };
  const qemuIo = (target: string, ...cmds: string[]): Promise<string> => tool('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), target]);
  const volumes = async (pool: string): Promise<string[]> => (await inProcessJson<Array<{ name: string }>>(home, ['volume', 'list', pool])).map((v) => v.name);
  const snapshots = async (ref: string): Promise<string[]> => snapshotNames((await inProcessJson<{ tree: ChainNode }>(home, ['snapshot', 'list', ref])).tree).sort();
  const expectClean = async (...pools: string[]): Promise<void> => {
    for (const p of pools) expect((await inProcessJson<{ problems: unknown[] }>(home, ['pool', 'check', p])).problems, `pool check ${p}`).toEqual([]);
  };
  /** A copy of each export, to compare the moved volume with. */
  const keep = async (exports: string[]): Promise<Map<string, string>> => {
    const copies = new Map<string, string>();
    for (const e of exports) {
      const file = path.join(dir, `${e.replace(/[/@]/g, '_')}.raw`);
      await tool('nbdcopy', [uri(e), file], 120_000);
      copies.set(e, file);
    }
    return copies;
  };
  const compare = async (copies: Map<string, string>, exportOf: (name: string) => string): Promise<void> => {
    for (const [name, file] of copies) await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', file, uri(exportOf(name))], 120_000);
  };

  beforeAll(async () => {
    buildCli();
    await inProcess(home, ['pool', 'create', local, '--size', '1G']);
    await inProcess(home, ['pool', 'create', rados, ...radosPoolArgs(conf!), '--size', '1G']);
  }, 120_000);
  afterAll(async () => {
    await srv?.stop();
    await inProcess(home, ['pool', 'delete', rados, '--force']).catch(() => undefined);
    cleanup();
  });

  it('a cold migration there and back keeps every byte of the volume and of its snapshots, holes and zeroes too', async () => {
    await inProcess(home, ['volume', 'create', `${local}/cold`, '64M']);
    await serve(local);
    await qemuIo(uri('cold'), 'write -P 0x11 0 16M', 'write -P 0x12 40M 8M');
    await inProcess(home, ['snapshot', 'create', `${local}/cold@one`]);
    await qemuIo(uri('cold'), 'write -P 0x22 8M 16M', 'write -z 0 1M', 'discard 44M 2M');
    await inProcess(home, ['snapshot', 'create', `${local}/cold@two`]);
    await qemuIo(uri('cold'), 'write -P 0x33 20M 30M', 'discard 10M 2M', 'write -z 60M 4M');
    const copies = await keep(['cold', 'cold@one', 'cold@two']);
    await stop();

    const there = JSON.parse(await inProcess(home, ['--json', 'migrate', `${local}/cold`, rados])) as Moved;
    expect(there).toMatchObject({ source: `${local}/cold`, target: `${rados}/cold` });
    expect(await volumes(local)).not.toContain('cold');
    expect(await snapshots(`${rados}/cold`)).toEqual(['one', 'two']);
    await serve(rados);
    await compare(copies, (name) => name);
    await stop();
    await expectClean(local, rados);

    await inProcess(home, ['migrate', `${rados}/cold`, local]);
    expect(await volumes(rados)).not.toContain('cold');
    await serve(local);
    await compare(copies, (name) => name);
    await stop();
    expect(await snapshots(`${local}/cold`)).toEqual(['one', 'two']);
    await expectClean(local, rados);
  }, 300_000);

  it('an online migration there and back under fio: no I/O error, fio verifies after each pivot, and the snapshots are what they were', async () => {
    await inProcess(home, ['volume', 'create', `${local}/vm`, '96M']);
    // Only the file pool is served: the first migration opens the RADOS pool in that server, the second goes back from it.
    await serve(local);
    await qemuIo(uri('vm'), 'write -P 0x41 0 96M');
    await inProcess(home, ['snapshot', 'create', `${local}/vm@base`]);
    await qemuIo(uri('vm'), 'write -P 0x42 16M 16M', 'write -P 0x43 72M 8M', 'write -z 88M 2M');
    await inProcess(home, ['snapshot', 'create', `${local}/vm@mid`]);
    const copies = await keep(['vm@base', 'vm@mid']);

    // fio rounds over the first 48M, back to back until both moves are done, each checking what it wrote as it goes (reads and writes all along).
    const job: FioVerifyJob = { uri: uri('vm'), size: 48 * MiB, bssplit: '4k/50:64k/50', iodepth: 16, verifyBacklog: 64 };
    let moving = true;
    const writer = (async () => {
      while (moving) await fioVerify(job);
    })();
    const moves: Array<Moved & { writesDuring: number }> = [];
    const move = async (from: string, to: string): Promise<void> => {
      const before = await writes('vm');
      const moved = await inProcessJson<Moved>(home, ['migrate', `${from}/vm`, to, '--online']);
      moves.push({ ...moved, writesDuring: (await writes('vm')) - before });
    };
    try {
      await move(local, rados);
      // The snapshots arrived whole while fio kept writing the head.
      await compare(copies, (name) => `${rados}/${name}`);
      await move(rados, local);
    } finally {
      moving = false;
      await writer;
    }
    expect(moves.map((m) => [m.source, m.target])).toEqual([[`${local}/vm`, `${rados}/vm`], [`${rados}/vm`, `${local}/vm`]]);
    for (const m of moves) expect(m.writesDuring, `fio wrote while ${m.source} moved to ${m.target}`).toBeGreaterThan(0);

    // Read again, all of it from the file pool now, through the name the client kept using.
    await fioVerify({ ...job, verifyOnly: true });
    await qemuIo(uri('vm'), 'read -P 0x41 48M 24M', 'read -P 0x43 72M 8M', 'read -P 0x41 80M 8M', 'read -P 0 88M 2M', 'read -P 0x41 90M 6M');
    await compare(copies, (name) => name);
    expect(await volumes(local)).toContain('vm');
    expect(await volumes(rados)).not.toContain('vm');
    expect(await snapshots(`${local}/vm`)).toEqual(['base', 'mid']);
    await expectClean(local, rados);
    await stop();
  }, 600_000);
});
