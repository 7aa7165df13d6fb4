import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Option, type Command } from 'commander';
import { FileDevice, type BlockDevice } from '../../src/blockdev/index.js';
import { DEFAULT_MAX_BUFFER, DEFAULT_MAX_PER_ADDRESS, loadTls, MIN_MAX_BUFFER, NbdServer, nbdUri, SparseMemoryDevice, StaticExportSource, type ExportSource, type ListenAddress, type NbdServerStats, type StaticExport, type TlsMode } from '../../src/nbd/index.js';
import { cacheOption, type CacheMode } from '../cache-option.js';
import { ControlServer } from '../control-server.js';
import { IncompleteVolumeError } from '../incomplete.js';
import { oneLine, openRegisteredPool, withPool, type OpenedPool } from '../open-pool.js';
import { globals } from '../output.js';
import { recordMembers } from '../raid-members.js';
import { checkName, Registry } from '../registry.js';
import { createFilePool } from './pool.js';
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
}

const DEFAULT_LISTEN = '127.0.0.1:10809';
const DEFAULT_POOL = 'pool0';
const DEFAULT_VOLUME = 'vm1';

export const serveCommands: CommandGroup = (program) => {
  program
    .command('serve')
    .description('export volumes, a raw file or a memory disk over NBD until SIGINT/SIGTERM')
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
    .option('--rebuild-rate <size>', 'RAID pools: background rebuild rate per second (0 = unlimited), also for raid add/replace sent to the server without --rate', '200M')
    .action(async (pools: string[], opts: ServeOptions, cmd: Command) => serve(pools, opts, globals(cmd).home));
};

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** What to serve: a source of exports, the name the printed URI uses, and how to close it all after the server. */
interface Served {
  source: ExportSource;
  uriName: string;
  close(): Promise<void>;
}

async function serve(pools: string[], opts: ServeOptions, home: string): Promise<void> {
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
  // The counters on demand (kill -USR1), as one JSON line on stderr.
  const dumpStats = (): void => void process.stderr.write(`${JSON.stringify({ stats: server.stats })}\n`);
  process.on('SIGUSR1', dumpStats);
  try {
    const bound: ListenAddress[] = [];
    for (const a of addresses) bound.push(await server.listen(a));
    const name = served.uriName;
    for (const b of bound) process.stdout.write(`${nbdUri(b, name)}\n`);
    process.stdout.write(`${qemuLine(bound[0]!, name, tls.mode === 'off' ? undefined : tls.psk ? { psk: [...tls.psk.keys()][0]! } : 'x509')}\n`);
    if (tls.mode !== 'off') for (const b of bound) process.stdout.write(`${nbdUri(b, name, true)}\n`);
    await untilSignal();
    await server.close();
    const summary = refusalSummary(server.stats);
    if (summary) process.stderr.write(`strata serve: ${summary}\n`);
  } finally {
    process.off('SIGUSR1', dumpStats);
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
    for (const o of opened.splice(0)) await o.close();
  };
  try {
    const exports: StaticExport[] = [];
    // Volumes an import left incomplete: not served unless named with --allow-incomplete; a warning says why.
    const held: { name: string; pool: string; volume: string }[] = [];
    for (const poolName of new Set(poolNames)) {
      const o = await openRegisteredPool(home, checkName('pool', poolName), { readOnly, serving: { rebuildRate }, direct });
      opened.push(o);
      if (o.raid) {
        const raid = o.raid;
        const log = (m: string): void => void process.stderr.write(`strata serve: ${m}\n`);
        // A member that fails on its own may bring in a hot spare: the registry follows the member set.
        raid.listen(() => {
          try {
            recordMembers(new Registry(home), poolName, raid.array);
          } catch (err) {
            log(`pool '${poolName}': the registry could not record the new member list: ${oneLine(err)}`);
          }
        });
        const control = await ControlServer.start({ home, pool: poolName, raid, rebuildRate, readOnly, direct, log });
        if (control) controls.push(control);
      }
      for (const v of await o.pool.listVolumes()) {
        const name = poolNames.length > 1 ? `${poolName}/${v.name}` : v.name;
        if (v.incomplete && opts.allowIncomplete !== true) {
          held.push({ name, pool: poolName, volume: v.name });
          continue;
        }
        exports.push({
          name,
          description: `volume ${poolName}/${v.name}, ${formatSize(v.size)}`,
          readOnly: readOnly || v.readOnly,
          open: () => o.pool.openVolume(v.name, { readOnly }),
        });
      }
    }
    const incomplete = (n: string): void => {
      const h = held.find((x) => x.name === n);
      if (h) throw new IncompleteVolumeError(h.pool, h.volume, '--allow-incomplete serves what it holds');
    };
    for (const n of opts.export) incomplete(n);
    if (opts.export.length === 0) {
      for (const h of held) process.stderr.write(`strata serve: not serving ${h.pool}/${h.volume}: it is incomplete, its import did not finish (--allow-incomplete serves it)\n`);
    }
    const chosen = opts.export.length === 0 ? exports : opts.export.map((n) => exports.find((e) => e.name === n) ?? missingExport(n, exports));
    if (chosen.length === 0 && held.length > 0) throw new Error(`no volumes to serve in ${poolNames.join(', ')}: every one is incomplete (re-run its import, or --allow-incomplete)`);
    if (chosen.length === 0) throw new Error(`no volumes to serve in ${poolNames.join(', ')} (create one: strata volume create ${poolNames[0]}/NAME SIZE)`);
    return { source: new StaticExportSource(chosen), uriName: chosen[0]!.name, close: closeAll };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

function missingExport(name: string, exports: StaticExport[]): never {
  throw new Error(`no volume '${name}' to serve (there are: ${exports.map((e) => e.name).join(', ') || 'none'})`);
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
  if (opts.listen !== undefined || opts.socket === undefined) out.push(parseHostPort(opts.listen ?? DEFAULT_LISTEN));
  if (opts.socket !== undefined) out.push({ socket: path.resolve(opts.socket) });
  return out;
}

function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`invalid --listen '${text}' (use HOST:PORT, [IPv6]:PORT)`);
  return { host: m[1] ?? m[2]!, port };
}

/** A qemu command line that attaches the export; with TLS, CERTDIR / KEYDIR stand for the client's credentials directory. */
function qemuLine(address: ListenAddress, name: string, tls: undefined | 'x509' | { psk: string }): string {
  if (!tls) return `qemu-system-x86_64 -drive file=${nbdUri(address, name).replace(/,/g, ',,')},format=raw,if=virtio`;
  const where = 'socket' in address ? `server.type=unix,server.path=${address.socket}` : `server.type=inet,server.host=${address.host},server.port=${address.port}`;
  const creds = tls === 'x509' ? 'tls-creds-x509,id=tls0,endpoint=client,dir=CERTDIR' : `tls-creds-psk,id=tls0,endpoint=client,dir=KEYDIR,username=${tls.psk}`;
  return `qemu-system-x86_64 -object ${creds} -drive driver=nbd,${where},export=${name},tls-creds=tls0,format=raw,if=virtio`;
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
      resolve();
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
  });
}

/** The TLS option combinations, refused in the words of the command line before the library reads any file. */
function checkTlsFlags(f: Parameters<typeof loadTls>[0]): void {
  if (f.mode === 'off' && (f.cert || f.key || f.psk || f.ca)) throw new Error('--tls-cert, --tls-key, --tls-ca and --tls-psk need --tls on or --tls require');
  if (f.mode === 'off') return;
  if (f.psk && (f.cert || f.key || f.ca)) throw new Error('give either --tls-psk or --tls-cert with --tls-key (and --tls-ca), not both');
  if (!f.psk && (!f.cert || !f.key)) throw new Error(`--tls ${f.mode} needs --tls-cert and --tls-key, or --tls-psk`);
}
