import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Option, type Command } from 'commander';
import { FileDevice, type BlockDevice } from '../../src/blockdev/index.js';
import type { MetricsEndpoint, MetricsSource } from '../../src/host/metrics.js';
import { DEFAULT_MAX_BUFFER, DEFAULT_MAX_PER_ADDRESS, loadTls, MIN_MAX_BUFFER, NbdServer, nbdUri, SparseMemoryDevice, StaticExportSource, type ExportSource, type ListenAddress, type NbdServerStats, type TlsMode } from '../../src/nbd/index.js';
import { cacheOption, type CacheMode } from '../cache-option.js';
import { ControlServer } from '../../src/host/control-server.js';
import { PoolExportSource, type ServedPool } from '../../src/host/pool-exports.js';
import { LiveVolumes } from '../../src/host/live-volumes.js';
import { jobsFor } from '../../src/host/jobs.js';
import type { ServedEndpoint } from '../../src/host/served-endpoint.js';
import { IncompleteVolumeError } from '../incomplete.js';
import { clientLines, type ClientTls } from '../qemu-lines.js';
import { serveDocument } from '../serve-document.js';
import { oneLine, openRegisteredPool, withPool, type OpenedPool } from '../../src/host/open-pool.js';
import { globals } from '../output.js';
import { recordMembers } from '../../src/host/raid-members.js';
import { checkName, Registry } from '../../src/host/registry.js';
import { poolHealth } from '../../src/host/pool-health.js';
import { createFilePool } from './pool.js';
import { DEFAULT_LISTEN, parseHostPort } from '../host-port.js';
import { formatSize, parseSize } from '../size.js';
import type { CommandGroup } from './index.js';

interface ServeOptions {
  file?: string;
  memory?: string;
  listen?: string;
  socket?: string;
  export: string[];
  readOnly?: boolean;
  allowIncomplete?: boolean;
  tls: TlsMode;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsPsk?: string;
  maxConnections: string;
  maxConnectionsPerAddress: string;
  maxBuffer: string;
  idleTimeout: string;
  handshakeTimeout: string;
  rebuildRate: string;
  cache: CacheMode;
  metrics?: string;
}

const DEFAULT_POOL = 'pool0';
const DEFAULT_VOLUME = 'vm1';

export const serveCommands: CommandGroup = (program) => {
  program
    .command('serve')
    .description('export volumes, a raw file or a memory disk over NBD until SIGINT, SIGTERM or SIGHUP')
    .argument('[pools...]', 'pools whose volumes to serve (each volume by its name)')
    .option('--file <path>', 'serve a raw image or plain file')
    .option('--memory <size>', 'serve a throwaway in-memory disk of this size')
    .option('--listen <host:port>', `TCP address to listen on (default ${DEFAULT_LISTEN}; port 0 picks a free one)`)
    .option('--socket <path>', 'Unix socket to listen on')
    .option('--export <name>', 'volume to serve (repeatable; default all), or the export name of --file / --memory', collect, [])
    .option('--read-only', 'refuse every write')
    .option('--allow-incomplete', 'also serve volumes whose import did not finish (what they hold is partial)')
    .addOption(new Option('--tls <mode>', 'off, on (clients may upgrade) or require (only STARTTLS before TLS)').choices(['off', 'on', 'require']).default('off'))
    .option('--tls-cert <file>', 'X.509 server certificate (PEM)')
    .option('--tls-key <file>', 'private key of --tls-cert (PEM)')
    .option('--tls-ca <file>', 'require client certificates signed by this CA (PEM)')
    .option('--tls-psk <file>', 'pre-shared keys, one identity:hexkey per line (psktool format)')
    .option('--max-connections <n>', 'connections served at once', '128')
    .option('--max-connections-per-address <n>', 'connections from one client IP address (0 = no cap; Unix-socket clients are not counted)', String(DEFAULT_MAX_PER_ADDRESS))
    .option('--max-buffer <size>', `reply and write-payload bytes held for all clients together; readers that do not keep up are paused (at least ${formatSize(MIN_MAX_BUFFER)})`, formatSize(DEFAULT_MAX_BUFFER))
    .option('--idle-timeout <seconds>', 'close a connection after this long with no request and no reply delivered (0 = never)', '0')
    .option('--handshake-timeout <seconds>', 'drop a client that has not finished the handshake (TLS included) by then', '30')
    .addOption(cacheOption('pool files, RAID members and --file'))
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks a free one)')
    .option('--rebuild-rate <size>', 'RAID pools: background rebuild rate per second (0 = unlimited), also for raid add/replace sent to the server without --rate', '200M')
    .action(async (pools: string[], opts: ServeOptions, cmd: Command) => serve(pools, opts, globals(cmd).home, globals(cmd).json));
};

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** What to serve: a source of exports, the name the printed URI uses, and how to close it all after the server. */
interface Served {
  source: ExportSource;
  uriName: string;
  /** The pools behind the exports, for the metrics. */
  pools: MetricsSource['pools'];
  close(): Promise<void>;
  /** Hands over the server once it exists (the control socket asks it who is connected). */
  attach?(server: NbdServer): void;
  /** Hands over the bound addresses once listening (the control socket tells import and export where to connect). */
  listening?(bound: ListenAddress[]): void;
}

async function serve(pools: string[], opts: ServeOptions, home: string, json: boolean): Promise<void> {
  const maxConnections = Number(opts.maxConnections);
  if (!Number.isSafeInteger(maxConnections) || maxConnections < 1) throw new Error(`invalid --max-connections '${opts.maxConnections}'`);
  const perAddress = Number(opts.maxConnectionsPerAddress);
  if (!Number.isSafeInteger(perAddress) || perAddress < 0) throw new Error(`invalid --max-connections-per-address '${opts.maxConnectionsPerAddress}'`);
  const maxBuffer = parseSize(opts.maxBuffer);
  if (maxBuffer < MIN_MAX_BUFFER) throw new Error(`--max-buffer ${opts.maxBuffer} is below the minimum of ${formatSize(MIN_MAX_BUFFER)} (two requests of the largest size)`);
  const idleTimeoutMs = seconds('--idle-timeout', opts.idleTimeout, 0);
  const handshakeTimeoutMs = seconds('--handshake-timeout', opts.handshakeTimeout, 1);
  const tlsFiles: Parameters<typeof loadTls>[0] = { mode: opts.tls };
  if (opts.tlsCert !== undefined) tlsFiles.cert = opts.tlsCert;
  if (opts.tlsKey !== undefined) tlsFiles.key = opts.tlsKey;
  if (opts.tlsCa !== undefined) tlsFiles.ca = opts.tlsCa;
  if (opts.tlsPsk !== undefined) tlsFiles.psk = opts.tlsPsk;
  checkTlsFlags(tlsFiles);
  const tls = loadTls(tlsFiles);
  const addresses = listenAddresses(opts);
  const metricsAt = opts.metrics === undefined ? undefined : parseHostPort('--metrics', opts.metrics);
  const useDevice = opts.file !== undefined || opts.memory !== undefined;
  const served = useDevice ? serveDevice(opts) : await servePools(home, pools.length > 0 ? pools : await defaultPools(home), opts);
  const server = new NbdServer({
    source: served.source,
    readOnly: opts.readOnly ?? false,
    tls,
    maxConnections,
    maxConnectionsPerAddress: perAddress,
    maxBufferBytes: maxBuffer,
    idleTimeoutMs,
    handshakeTimeoutMs,
    releaseMemory: collectSoon(),
    log: (m) => process.stderr.write(`strata serve: ${m}\n`),
  });
  served.attach?.(server);
  // The counters on demand (kill -USR1), as one JSON line on stderr.
  const dumpStats = (): void => void process.stderr.write(`${JSON.stringify({ stats: server.stats })}\n`);
  process.on('SIGUSR1', dumpStats);
  let metrics: MetricsEndpoint | undefined;
  // Listened for before the first line is printed: a client (or a test) that stops the server as soon as it reads the URI must not kill it.
  const stopped = untilSignal();
  try {
    // The metrics endpoint first: when its address is taken, no NBD listener is left open behind the error.
    if (metricsAt) {
      // Loaded only when asked for: prom-client and its OpenTelemetry dependency cost every serve heap and start-up time.
      const { hostMetrics, serveMetrics } = await import('../../src/host/metrics.js');
      metrics = await serveMetrics(hostMetrics({ server, pools: served.pools, jobs: (pool) => jobsFor(home, pool).list() }), metricsAt.host, metricsAt.port);
    }
    const bound: ListenAddress[] = [];
    for (const a of addresses) bound.push(await server.listen(a));
    const name = served.uriName;
    const lines = clientLines(bound, name, clientTls(opts, tls.mode !== 'off' && tls.psk));
    served.listening?.(bound);
    if (json) process.stdout.write(`${JSON.stringify(serveDocument(bound, await served.source.list(), lines, metrics?.url), null, 2)}\n`);
    else {
      for (const b of bound) process.stdout.write(`${nbdUri(b, name)}\n`);
      if (metrics) process.stdout.write(`metrics: ${metrics.url}\n`);
      process.stdout.write(`${lines.qemu}\n`);
      for (const u of lines.tlsUris) process.stdout.write(`${u}\n`);
      for (const n of lines.notes) process.stderr.write(`strata serve: ${n}\n`);
    }
    await stopped;
    await server.close();
    const summary = refusalSummary(server.stats);
    if (summary) process.stderr.write(`strata serve: ${summary}\n`);
  } finally {
    process.off('SIGUSR1', dumpStats);
    await metrics?.close();
    await served.close();
  }
}

/**
 * With no pool named: every registered pool; on a fresh home, a default pool
 * with one thin volume, so that `strata serve` alone gives QEMU a disk.
 */
async function defaultPools(home: string): Promise<string[]> {
  const registry = new Registry(home);
  const names = registry.names();
  if (names.length > 0) return names;
  await createFilePool(registry, DEFAULT_POOL, parseSize('100G'), undefined, undefined);
  await withPool(home, DEFAULT_POOL, { readOnly: false }, ({ pool }) => pool.createVolume(DEFAULT_VOLUME, parseSize('20G')));
  process.stderr.write(`strata serve: created pool '${DEFAULT_POOL}' (100G, sparse) in ${home} with a 20G thin volume '${DEFAULT_VOLUME}'\n`);
  return [DEFAULT_POOL];
}

/**
 * Every volume of the given pools, by name: `vm1` when one pool is served,
 * `pool0/vm1` when several are (names could clash). `--export` picks some.
 * The pools stay open, and locked, for the server's lifetime.
 */
async function servePools(home: string, poolNames: string[], opts: ServeOptions): Promise<Served> {
  if (opts.file !== undefined || opts.memory !== undefined) throw new Error('give pools, or --file, or --memory: not several');
  const readOnly = opts.readOnly ?? false;
  const direct = opts.cache === 'none';
  const rebuildRate = parseSize(opts.rebuildRate);
  const opened: OpenedPool[] = [];
  const controls: ControlServer[] = [];
  const closeAll = async (): Promise<void> => {
    // The control sockets first: no array command may start on a pool being closed.
    for (const c of controls.splice(0)) await c.close();
    const fenced = opened.filter((o) => poolHealth(o.pool).state === 'fenced').map((o) => o.record.name);
    for (const o of opened.splice(0)) await o.close();
    // A server that lost a pool to another host ends failed, so that whoever runs it (systemd, a script) sees it.
    if (fenced.length > 0) {
      process.stderr.write(`strata serve: fenced while served, another host took it over and every write to it failed from then on: ${fenced.map((n) => `pool '${n}'`).join(', ')}\n`);
      process.exitCode = 1;
    }
  };
  // The server is made once the pools are open; until then nobody is connected.
  let server: NbdServer | undefined;
  let listeningOn: ListenAddress[] = [];
  try {
    const servedPools: ServedPool[] = [];
    const pools: Served['pools'][number][] = [];
    for (const poolName of new Set(poolNames)) {
      const o = await openRegisteredPool(home, checkName('pool', poolName), { readOnly, serving: { rebuildRate }, direct });
      opened.push(o);
      servedPools.push({ name: poolName, pool: o.pool });
      pools.push({ name: poolName, pool: o.pool, ...(o.raid ? { array: o.raid.array } : {}) });
    }
    const only = opts.export.length > 0 ? new Set(opts.export) : undefined;
    const source = new PoolExportSource(servedPools, { readOnly, allowIncomplete: opts.allowIncomplete === true, ...(only ? { only } : {}), describe: (pool, volume, size) => `volume ${pool}/${volume}, ${formatSize(size)}` });
    const log = (m: string): void => void process.stderr.write(`strata serve: ${m}\n`);
    const adopting = new Map<string, Promise<OpenedPool>>();
    const live = new LiveVolumes({
      exportName: (pool, volume) => source.servedName(pool, volume),
      holdExport: async (name) => {
        const held = await server?.holdExport(name);
        return held ? { name: held.export.name, device: held.export.device, release: held.release } : undefined;
      },
      clientsOf: (name) => server?.clientsOf(name) ?? 0,
      adopt: async (pool) => {
        const have = opened.find((o) => o.record.name === pool);
        if (have) return have.pool;
        let p = adopting.get(pool);
        if (!p) {
          // A pool another process serves is locked by it: the open says who holds it.
          p = openRegisteredPool(home, checkName('pool', pool), { readOnly, serving: { rebuildRate }, direct }).then(async (o) => {
            opened.push(o);
            servedPools.push({ name: pool, pool: o.pool });
            pools.push({ name: pool, pool: o.pool, ...(o.raid ? { array: o.raid.array } : {}) });
            source.addPool({ name: pool, pool: o.pool });
            await startControl(o);
            log(`serving pool '${pool}' too (a migration's target); its volumes are exported as ${pool}/VOL`);
            return o;
          });
          adopting.set(pool, p);
          p.catch(() => adopting.delete(pool));
        }
        return (await p).pool;
      },
      alias: (oldName, to) => source.alias(oldName, to),
    });
    const startControl = async (o: OpenedPool): Promise<void> => {
      const poolName = o.record.name;
      const raid = o.raid;
      if (raid) {
        // A member that fails on its own may bring in a hot spare: the registry follows the member set.
        raid.listen(() => {
          try {
            recordMembers(new Registry(home), poolName, raid.array);
          } catch (err) {
            log(`pool '${poolName}': the registry could not record the new member list: ${oneLine(err)}`);
          }
        });
      }
      const admin = {
        clientsOf: (volume: string) => server?.clientsOf(source.servedName(poolName, volume)) ?? 0,
        disconnect: async (volume: string) => (server ? server.disconnect(source.servedName(poolName, volume)) : 0),
        live,
      };
      const endpoint = async (volume: string): Promise<ServedEndpoint> => {
        const name = await source.resolve(source.exportName(poolName, volume));
        return { listen: listeningOn, tls: opts.tls, exportName: name ?? null, clients: name === undefined ? 0 : admin.clientsOf(volume), readOnly };
      };
      const control = await ControlServer.start({ home, pool: poolName, opened: o.pool, ...(raid ? { raid } : {}), admin, rebuildRate, readOnly, direct, log, endpoint });
      if (control) controls.push(control);
    };
    for (const o of [...opened]) await startControl(o);
    const held = source.held();
    const exports = await source.list();
    for (const n of opts.export) {
      const h = held.find((x) => x.name === n);
      if (h) throw new IncompleteVolumeError(h.pool, h.volume, '--allow-incomplete serves what it holds');
      if (!exports.some((e) => e.name === n)) missingExport(n, source.allNames());
    }
    if (opts.export.length === 0) {
      for (const h of held) process.stderr.write(`strata serve: not serving ${h.pool}/${h.volume}: it is incomplete, its import did not finish (--allow-incomplete serves it)\n`);
    }
    if (exports.length === 0 && held.length > 0) throw new Error(`no volumes to serve in ${poolNames.join(', ')}: every one is incomplete (re-run its import, or --allow-incomplete)`);
    if (exports.length === 0) throw new Error(`no volumes to serve in ${poolNames.join(', ')} (create one: strata volume create ${poolNames[0]}/NAME SIZE)`);
    return { source, uriName: opts.export[0] ?? exports[0]!.name, pools, close: closeAll, attach: (s) => void (server = s), listening: (b) => void (listeningOn = b) };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

function missingExport(name: string, names: string[]): never {
  throw new Error(`no volume '${name}' to serve (there are: ${names.join(', ') || 'none'})`);
}

/** --file or --memory: one device, open for the server's lifetime (a file keeps its lock while connections come and go). */
function serveDevice(opts: ServeOptions): Served {
  if (opts.file !== undefined && opts.memory !== undefined) throw new Error('give one of --file PATH or --memory SIZE, not both');
  if (opts.export.length > 1) throw new Error('--file and --memory serve one export: give --export once');
  let device: BlockDevice;
  let name: string;
  // Clients see the description: a file's name, never the server's directory layout.
  let description: string;
  if (opts.file !== undefined) {
    device = FileDevice.open(opts.file, { readOnly: opts.readOnly ?? false, direct: opts.cache === 'none' });
    name = opts.export[0] ?? path.basename(opts.file, path.extname(opts.file));
    description = `raw image ${path.basename(opts.file)}`;
  } else {
    if (opts.cache === 'none') throw new Error('--cache none applies to pools and --file, not to --memory');
    device = new SparseMemoryDevice(parseSize(opts.memory!));
    name = opts.export[0] ?? 'memory';
    description = `memory disk of ${opts.memory}`;
  }
  const source = new StaticExportSource([{ name, description, readOnly: opts.readOnly ?? false, open: async () => device, release: async () => undefined }]);
  return {
    source,
    uriName: name,
    pools: [],
    close: async () => {
      try {
        await device.flush();
      } finally {
        await device.close();
      }
    },
  };
}

function listenAddresses(opts: ServeOptions): ListenAddress[] {
  const out: ListenAddress[] = [];
  if (opts.listen !== undefined || opts.socket === undefined) out.push(parseHostPort('--listen', opts.listen ?? DEFAULT_LISTEN));
  if (opts.socket !== undefined) out.push({ socket: path.resolve(opts.socket) });
  return out;
}

/** The client side of the server's TLS set-up, for the printed lines (undefined: TLS off). */
function clientTls(opts: ServeOptions, psk: Map<string, Buffer> | undefined | false): ClientTls | undefined {
  if (psk === false) return undefined;
  if (psk && opts.tlsPsk !== undefined) return { kind: 'psk', file: opts.tlsPsk, identity: [...psk.keys()][0]! };
  return { kind: 'x509', cert: opts.tlsCert!, clientCertRequired: opts.tlsCa !== undefined };
}

function seconds(flag: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < min || n > 365 * 86400) throw new Error(`invalid ${flag} '${text}' (seconds${min > 0 ? `, at least ${min}` : ', 0 for never'})`);
  return Math.round(n * 1000);
}

/** What the server turned away or cut off while it ran, in one line; undefined when nothing. */
export function refusalSummary(stats: NbdServerStats): string | undefined {
  const { refused, idleClosed, handshakeTimeouts } = stats;
  const parts: string[] = [];
  if (refused.connectionLimit > 0) parts.push(`${refused.connectionLimit} connections refused at --max-connections`);
  if (refused.perAddressLimit > 0) parts.push(`${refused.perAddressLimit} refused at --max-connections-per-address`);
  if (idleClosed > 0) parts.push(`${idleClosed} closed idle`);
  if (handshakeTimeouts > 0) parts.push(`${handshakeTimeouts} dropped for not finishing the handshake`);
  return parts.length > 0 ? parts.join(', ') : undefined;
}

/**
 * Dropped buffer slabs are unmapped only when V8 collects them, and an idle
 * server may not collect for hours: run a full collection shortly after
 * (once per burst of releases). The gc function is taken from a fresh context
 * after exposing it, as --expose-gc would.
 */
function collectSoon(): () => void {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as (() => void) | undefined;
  let pending: NodeJS.Timeout | undefined;
  return () => {
    if (!gc || pending) return;
    pending = setTimeout(() => {
      pending = undefined;
      gc();
    }, 100);
    pending.unref();
  };
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      process.off('SIGHUP', done);
      resolve();
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
    // A closed terminal (or a `kill -HUP` meant as "stop") ends serving cleanly, as SIGTERM does, instead of killing mid-request.
    process.on('SIGHUP', done);
  });
}

/** The TLS option combinations, refused in the words of the command line before the library reads any file. */
function checkTlsFlags(f: Parameters<typeof loadTls>[0]): void {
  if (f.mode === 'off' && (f.cert || f.key || f.psk || f.ca)) throw new Error('--tls-cert, --tls-key, --tls-ca and --tls-psk need --tls on or --tls require');
  if (f.mode === 'off') return;
  if (f.psk && (f.cert || f.key || f.ca)) throw new Error('give either --tls-psk or --tls-cert with --tls-key (and --tls-ca), not both');
  if (!f.psk && (!f.cert || !f.key)) throw new Error(`--tls ${f.mode} needs --tls-cert and --tls-key, or --tls-psk`);
}
