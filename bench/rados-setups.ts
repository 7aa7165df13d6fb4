import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { nbdTarget, type FioTarget } from './nbd-fio.js';
import { createPoolVolume, serveVolume, startRadosRawServer, strataCli, type RunningServer } from './nbd-servers.js';
import type { BenchCluster } from './rados-cluster.js';

const run = promisify(execFile);

/** Where the setups of the RADOS benchmark make their images, and how big. */
export interface RadosBenchContext {
  cluster: BenchCluster;
  /** The Ceph client name, without 'client.'. */
  id: string;
  /** The Ceph pool of Strata's pools and devices. */
  strataPool: string;
  /** The Ceph pool of the RBD images. */
  rbdPool: string;
  /** A folder of the benchmark's, for Strata's home. */
  dir: string;
  size: number;
  /** Unique to this run: every name it makes in a cluster ends with it, so two runs on one cluster never meet. */
  tag: string;
}

/** A setup started: what fio is pointed at, and the process that serves it. */
export interface RadosRunning {
  fio: FioTarget;
  /** The process that does the storage work outside fio, whose CPU and memory are measured; none for fio's rbd engine, where librbd runs in fio. */
  serverPid?: number;
  /** Stops serving and, on a cluster that outlives the benchmark, removes what the setup made there. */
  stop(log: (line: string) => void): Promise<void>;
}

export interface RadosSetup {
  /** Row label in the tables. */
  name: string;
  /** What exactly runs, for the legend. */
  detail: string;
  /** Why this host cannot run it, or undefined when it can. */
  unavailable(): string | undefined;
  start(ctx: RadosBenchContext): Promise<RadosRunning>;
}

const EXPORT = 'bench';
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
/** Opening a pool on RADOS connects to the monitors first: longer than a file pool's start. */
const READY_TIMEOUT_MS = 60_000;

/**
 * The product: `strata pool create --rados`, a thin volume on it and `strata
 * serve`, all through the CLI as a user runs them. The pool is sized as the
 * NBD benchmark's file pools are, so that it never runs out.
 */
export const strata: RadosSetup = {
  name: 'strata',
  detail: 'strata serve on a thin volume of a pool on RADOS (strata pool create --rados), fio ioengine=nbd over 127.0.0.1',
  unavailable: () => undefined,
  async start(ctx) {
    const pool = `bench-${ctx.tag}`;
    const v = createPoolVolume({ home: path.join(ctx.dir, 'strata-home'), pool, volume: EXPORT }, ctx.size, 2 * ctx.size + GIB, [
      '--rados',
      ctx.strataPool,
      '--ceph-conf',
      ctx.cluster.conf,
      '--id',
      ctx.id,
    ]);
    const server = await serveVolume(v, READY_TIMEOUT_MS);
    return {
      fio: nbdTarget(server.uri),
      serverPid: server.pid,
      async stop(log) {
        await stopServer('strata serve', server, log);
        if (ctx.cluster.own) return;
        try {
          execFileSync(process.execPath, [strataCli(), '--home', v.home, 'pool', 'delete', pool, '--force'], { stdio: 'pipe' });
        } catch (err) {
          log(`strata: could not delete pool ${pool} from Ceph pool ${ctx.strataPool}: ${message(err)}`);
        }
      },
    };
  },
};

/** What the pool format costs: the same NBD server on the bare RADOS device, no pool, journal or checksums. */
export const strataRaw: RadosSetup = {
  name: 'strata-raw',
  detail: "Strata's NBD server on a bare RADOS device (RadosDevice, 4 MiB objects, no pool format), bench/rados-raw-serve.ts; fio ioengine=nbd",
  unavailable: () => undefined,
  async start(ctx) {
    const name = `strata-raw-${ctx.tag}`;
    const server = await startRadosRawServer(
      ['--conf', ctx.cluster.conf, '--id', ctx.id, '--pool', ctx.strataPool, '--name', name, '--size', String(ctx.size), '--export', EXPORT],
      READY_TIMEOUT_MS,
    );
    // The server removes its device's objects as it stops.
    return { fio: nbdTarget(server.uri), serverPid: server.pid, stop: (log) => stopServer('rados-raw-serve', server, log) };
  },
};

/** The anchor: fio's own rbd engine, librbd in fio's process, no network hop before the OSDs. */
export const fioRbd: RadosSetup = {
  name: 'fio-rbd',
  detail: "fio ioengine=rbd (librbd in fio's process, librbd's default settings) on an RBD image (rbd create, 4 MiB objects)",
  unavailable: () => undefined,
  async start(ctx) {
    const image = `fio-rbd-${ctx.tag}`;
    await rbdCreate(ctx, image);
    return {
      fio: {
        label: `rbd:${ctx.rbdPool}/${image}`,
        args: ['--ioengine=rbd', `--clientname=${ctx.id}`, `--pool=${ctx.rbdPool}`, `--rbdname=${image}`],
        // The engine reads the default config, which CEPH_CONF names.
        env: { CEPH_CONF: ctx.cluster.conf },
      },
      stop: (log) => rbdRemove(ctx, image, log),
    };
  },
};

/**
 * The kernel's NBD client on rbd-nbd (librbd in a daemon of its own): what a
 * VM host without Strata would map. Never run where there is no nbd module.
 */
export const rbdNbd: RadosSetup = {
  name: 'rbd-nbd',
  detail: 'rbd-nbd map of an RBD image (librbd in the rbd-nbd daemon), fio ioengine=libaio direct=1 on its /dev/nbdN',
  unavailable() {
    if (!fs.existsSync('/sys/module/nbd')) return 'needs the kernel nbd module';
    if (process.getuid?.() !== 0) return 'needs root to map /dev/nbdN';
    return undefined;
  },
  async start(ctx) {
    const image = `rbd-nbd-${ctx.tag}`;
    await rbdCreate(ctx, image);
    const spec = `${ctx.rbdPool}/${image}`;
    const { stdout } = await run('rbd-nbd', ['-c', ctx.cluster.conf, '--id', ctx.id, 'map', spec], { timeout: READY_TIMEOUT_MS });
    const device = stdout.trim();
    if (!/^\/dev\/nbd\d+$/.test(device)) throw new Error(`rbd-nbd map ${spec} printed '${device}', not a device`);
    const serverPid = mapper(spec);
    return {
      fio: { label: device, args: ['--ioengine=libaio', '--direct=1', `--filename=${device}`] },
      ...(serverPid === undefined ? {} : { serverPid }),
      async stop(log) {
        try {
          await run('rbd-nbd', ['unmap', device], { timeout: READY_TIMEOUT_MS });
        } catch (err) {
          log(`rbd-nbd: could not unmap ${device}: ${message(err)}`);
        }
        await rbdRemove(ctx, image, log);
      },
    };
  },
};

export const RADOS_SETUPS: readonly RadosSetup[] = [strata, strataRaw, fioRbd, rbdNbd];

/** The setup every ratio is taken against. */
export const ANCHOR = fioRbd.name;

async function rbdCreate(ctx: RadosBenchContext, image: string): Promise<void> {
  await run('rbd', ['-c', ctx.cluster.conf, '--id', ctx.id, 'create', '--size', `${Math.ceil(ctx.size / MIB)}M`, `${ctx.rbdPool}/${image}`], { timeout: 120_000 });
}

async function rbdRemove(ctx: RadosBenchContext, image: string, log: (line: string) => void): Promise<void> {
  // An own cluster goes as a whole, and removing 1 GiB of objects one by one would only cost time.
  if (ctx.cluster.own) return;
  try {
    await run('rbd', ['-c', ctx.cluster.conf, '--id', ctx.id, 'rm', '--no-progress', `${ctx.rbdPool}/${image}`], { timeout: 300_000 });
  } catch (err) {
    log(`could not remove RBD image ${ctx.rbdPool}/${image}: ${message(err)}`);
  }
}

async function stopServer(what: string, server: RunningServer, log: (line: string) => void): Promise<void> {
  const exit = await server.stop();
  if (exit.code !== 0 && exit.signal !== 'SIGTERM') log(`${what} ended with code ${exit.code}, signal ${exit.signal}: ${exit.stderr.trim()}`);
}

/** The rbd-nbd daemon serving `spec`: it detaches from us, so it is found by its command line. */
function mapper(spec: string): number | undefined {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (path.basename(argv[0] ?? '') === 'rbd-nbd' && argv.includes('map') && argv.includes(spec)) return Number(entry);
    } catch {
      // Gone meanwhile.
    }
  }
  return undefined;
}

function message(err: unknown): string {
  const e = err as { stderr?: string | Buffer; message?: string };
  return (e.stderr?.toString().trim() || e.message || String(err)).split('\n')[0]!;
}
