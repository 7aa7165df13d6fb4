import path from 'node:path';
import { Option, type Command } from 'commander';
import { libvirtDiskXml, type ListenAddress } from '../../src/nbd/index.js';
import type { Preallocation, VolumeInfo } from '../../src/qcowlike/index.js';
import { adminOnPool } from '../../src/host/admin-client.js';
import { ControlClient } from '../../src/host/control-client.js';
import { ENDPOINT_OP, localTcp, type ServedEndpoint } from '../../src/host/served-endpoint.js';
import { DEFAULT_LISTEN, parseHostPort } from '../host-port.js';
import { INCOMPLETE_ADVICE } from '../incomplete.js';
import { globals, printFields, printJson, printTable, report, warn } from '../output.js';
import { checkName, parseVolumeRef } from '../../src/host/registry.js';
import { resizeBy } from '../resize-by.js';
import { formatSize, parseSize } from '../size.js';
import { flattenVolume } from './flatten.js';
import type { CommandGroup } from './index.js';

const PREALLOCATIONS: Preallocation[] = ['off', 'metadata', 'full'];

export const volumeCommands: CommandGroup = (program) => {
  const volume = program.command('volume').description('create, inspect, resize and delete volumes');

  volume
    .command('create <pool/vol> <size>')
    .description('create a thin volume')
    .addOption(new Option('--preallocation <mode>', 'allocate up front: off (thin), metadata, or full').choices(PREALLOCATIONS).default('off'))
    .action(createVolume);
  volume.command('list <pool>').description("list a pool's volumes").action(listVolumes);
  volume
    .command('info <pool/vol>')
    .description('show one volume')
    .option('--libvirt', "print the libvirt <disk type='network'> element that attaches the served volume")
    .option('--listen <host:port>', `with --libvirt: the address strata serve listens on (default ${DEFAULT_LISTEN})`)
    .option('--socket <path>', 'with --libvirt: the Unix socket strata serve listens on')
    .option('--export <name>', 'with --libvirt: the export name (default the volume name)')
    .option('--target <dev>', 'with --libvirt: the guest disk name', 'vdb')
    .option('--tls', 'with --libvirt: the server runs with --tls on or require')
    .action(volumeInfo);
  volume
    .command('resize <pool/vol> <size>')
    .description('grow or shrink a volume (SIZE, +SIZE to grow by, or -SIZE to shrink by)')
    .option('--force', 'shrink even if data lies beyond the new end (it is discarded)')
    // Lets `-SIZE` through as the size (commander takes anything after a dash for an option); resizeBy refuses real unknown options.
    .allowUnknownOption()
    .action(resizeVolume);
  volume
    .command('delete <pool/vol>')
    .description('delete a volume and free its space')
    .option('--force', 'on a served pool, end the connections using the volume first (their clients get an error)')
    .action(deleteVolume);
  volume
    .command('flatten <pool/vol>')
    .description('copy into a clone everything it reads from its snapshot or template, and cut it loose (a job)')
    .option('--rate <size>', 'most bytes copied per second (e.g. 50M); unlimited by default')
    .action(flattenVolume);
};

/** What `volume info --json` gives: the pool's record of the volume, and which pool it is in. */
type VolumeSummary = VolumeInfo & { pool: string };

async function createVolume(ref: string, sizeText: string, opts: { preallocation: Preallocation }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume } = parseVolumeRef(ref);
  const size = parseSize(sizeText);
  if (size === 0) throw new Error('a volume needs a size above 0');
  const info = await adminOnPool(g.home, poolName, { op: 'volume-create', volume, size, preallocation: opts.preallocation }, { readOnly: false });
  warn(g, info.warnings);
  report(g, { pool: poolName, ...info }, `created volume ${ref}: ${formatSize(info.size)}${opts.preallocation === 'off' ? '' : `, preallocation ${opts.preallocation}`}`);
}

async function listVolumes(poolName: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const volumes = await adminOnPool(g.home, checkName('pool', poolName), { op: 'volume-list' }, { readOnly: true });
  volumes.sort((a, b) => a.name.localeCompare(b.name));
  if (g.json) return printJson(volumes.map((v): VolumeSummary => ({ pool: poolName, ...v })));
  if (volumes.length === 0) {
    process.stdout.write(`no volumes in pool '${poolName}'\n`);
    return;
  }
  printTable(volumes, [
    { header: 'NAME', value: (v) => v.name },
    { header: 'SIZE', value: (v) => formatSize(v.size), align: 'right' },
    { header: 'ALLOCATED', value: (v) => formatSize(v.allocatedBytes), align: 'right' },
    { header: 'LAYERS', value: (v) => String(v.layers.length), align: 'right' },
    { header: 'MODE', value: (v) => (v.readOnly ? 'ro' : 'rw') },
    { header: 'STATE', value: (v) => (v.incomplete ? 'incomplete' : 'ready') },
    // UTC to the second; info and JSON have the full ISO time.
    { header: 'CREATED', value: (v) => v.created.replace('T', ' ').slice(0, 19) },
  ]);
}

interface InfoOptions {
  libvirt?: boolean;
  listen?: string;
  socket?: string;
  export?: string;
  target: string;
  tls?: boolean;
}

async function volumeInfo(ref: string, opts: InfoOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume } = parseVolumeRef(ref);
  const info = await adminOnPool(g.home, poolName, { op: 'volume-info', volume }, { readOnly: true });
  if (opts.libvirt === true) return printLibvirt(volume, info.readOnly, await servedDefaults(g.home, poolName, volume, opts), g.json);
  if (g.json) return printJson({ pool: poolName, ...info } satisfies VolumeSummary);
  const bytes = (n: number): string => `${formatSize(n)} (${n} bytes)`;
  const chain = info.layers.map((l) => `layer ${l.id} (${l.frozen ? 'frozen, ' : ''}${formatSize(l.allocatedBytes)})`).join(' -> ');
  printFields([
    ['volume', ref],
    ['size', bytes(info.size)],
    ['allocated', `${bytes(info.allocatedBytes)}, ${info.size === 0 ? '0' : ((100 * info.allocatedBytes) / info.size).toFixed(1)}% of size`],
    ['mode', info.readOnly ? 'read-only' : 'read-write'],
    ['state', info.incomplete ? `incomplete: ${INCOMPLETE_ADVICE}` : 'ready'],
    ['created', info.created],
    ['layers', chain],
    ...(info.chain.length > 1 ? ([['chain', info.chain.join(' -> ')]] as [string, string][]) : []),
    ...(info.origin !== null ? ([['origin', info.origin]] as [string, string][]) : []),
  ]);
}

async function resizeVolume(ref: string, sizeText: string, opts: { force?: boolean }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume } = parseVolumeRef(ref);
  const by = resizeBy(sizeText);
  const force = opts.force === true;
  const r = await adminOnPool(g.home, poolName, { op: 'volume-resize', volume, ...by, force }, { readOnly: false });
  warn(g, r.warnings);
  report(g, { pool: poolName, volume, oldSize: r.oldSize, size: r.size, warnings: r.warnings }, `resized ${ref}: ${formatSize(r.oldSize)} -> ${formatSize(r.size)}`);
}

async function deleteVolume(ref: string, opts: { force?: boolean }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume } = parseVolumeRef(ref);
  await adminOnPool(g.home, poolName, { op: 'volume-delete', volume, force: opts.force === true }, { readOnly: false });
  report(g, { deleted: ref }, `deleted volume ${ref}`);
}

/**
 * On a served pool, what the server says (where it listens, the export's
 * name, whether it speaks TLS) fills in what the options leave out, so the
 * element attaches what is served rather than the defaults.
 */
async function servedDefaults(home: string, poolName: string, volume: string, opts: InfoOptions): Promise<InfoOptions> {
  const client = await ControlClient.connect(home, poolName);
  if (!client) return opts;
  let e: ServedEndpoint;
  try {
    e = (await client.request({ op: ENDPOINT_OP, volume })).result as ServedEndpoint;
  } finally {
    client.close();
  }
  const out: InfoOptions = { ...opts };
  if (opts.listen === undefined && opts.socket === undefined) {
    const tcp = localTcp(e.listen);
    const unix = e.listen.find((a): a is { socket: string } => 'socket' in a);
    if (tcp) out.listen = `${tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host}:${tcp.port}`;
    else if (unix) out.socket = unix.socket;
  }
  if (opts.export === undefined && e.exportName !== null) out.export = e.exportName;
  if (opts.tls === undefined && e.tls !== 'off') out.tls = true;
  return out;
}

function printLibvirt(volume: string, readOnly: boolean, opts: InfoOptions, json: boolean): void {
  if (opts.listen !== undefined && opts.socket !== undefined) throw new Error('give --listen or --socket, not both');
  const address: ListenAddress = opts.socket !== undefined ? { socket: path.resolve(opts.socket) } : parseHostPort('--listen', opts.listen ?? DEFAULT_LISTEN);
  const xml = libvirtDiskXml({ exportName: opts.export ?? volume, address, target: opts.target, tls: opts.tls === true, readOnly });
  if (json) return printJson({ libvirt: xml });
  process.stdout.write(xml);
}
