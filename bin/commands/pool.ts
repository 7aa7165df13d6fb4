import fs from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import type { CheckProblem, CheckReport, PoolStats } from '../../src/qcowlike/index.js';
import { JobStore } from '../../src/host/job-store.js';
import { reclaimProblem } from '../../src/host/reclaim-problem.js';
import { cacheOption, type CacheMode } from '../cache-option.js';
import { oneLine, openRegisteredPool, PoolInUseError, withPool } from '../../src/host/open-pool.js';
import { raidCreateMessage } from '../raid-create-message.js';
import { whyUnrepaired } from '../check-why.js';
import { forgetPending } from '../../src/host/pending-store.js';
import { backingType } from '../../src/host/pool-backing.js';
import { createFileBacked } from '../../src/host/file-backing.js';
import { createRaidBacked, type RaidSpec } from '../../src/host/raid-backing.js';
import { createRadosBacked, destroyRadosBacked, radosImageExists, takeOverRados } from '../../src/host/rados-backing.js';
import { adminOnPool } from '../../src/host/admin-client.js';
import { globals, printFields, printJson, printTable, report } from '../output.js';
import { checkName, RAID_LEVELS, Registry, type PoolBacking, type PoolRecord, type RaidLevel } from '../../src/host/registry.js';
import { formatSize, parseSize } from '../size.js';
import { poolHealth, type PoolHealth } from '../../src/host/pool-health.js';
import type { CommandGroup } from './index.js';

const DEFAULT_POOL_SIZE = '100G';

/** What `pool info --json` and `pool list --json` give for one pool. */
export interface PoolSummary extends PoolStats, PoolHealth {
  name: string;
  backing: PoolBacking;
  created: string;
  usedBytes: number;
  freeBytes: number;
  totalBytes: number;
  /** Bytes the host file system holds for a file-backed pool (what `du` shows). */
  hostAllocatedBytes: number | null;
}

export const poolCommands: CommandGroup = (program) => {
  const pool = program.command('pool').description('create, inspect, check and delete pools');

  pool
    .command('create <pool>')
    .description('create a pool (a sparse file by default) and register it under the home directory')
    .option('--size <size>', `size of the pool file (default ${DEFAULT_POOL_SIZE}); with --raid, of the array (default: all the existing members hold, else ${DEFAULT_POOL_SIZE})`)
    .option('--path <file>', 'pool file (default HOME/POOL.pool)')
    .option('--cluster-size <size>', 'allocation unit, a power of two from 4K to 2M (default 64K)')
    .addOption(new Option('--raid <level>', 'build the pool on a RAID array of --members').choices(RAID_LEVELS))
    .option('--members <files>', 'comma-separated RAID member files')
    .option('--chunk <size>', 'RAID chunk size')
    .option('--spares <files>', 'comma-separated RAID hot spares')
    .option('--copies <n>', 'RAID 10: copies of each chunk (default 2)')
    .option('--force', 'RAID: reuse members that belong to another array')
    .option('--rados <cephpool>', 'build the pool on Ceph RADOS, in this Ceph pool (objects strata_header.POOL, strata_data.*)')
    .option('--ceph-conf <file>', 'with --rados: the Ceph config naming the monitors and keyring (default: librados\'s search, /etc/ceph/ceph.conf)')
    .option('--id <client>', 'with --rados: the Ceph client name without "client." (default admin); its key comes from the keyring')
    .action(createPool);

  pool.command('list').description('list registered pools').action(listPools);
  pool.command('info <pool>').description('show one pool').action(poolInfo);
  pool
    .command('check <pool>')
    .description('verify every structure and checksum of a pool; exits 1 if problems remain')
    .option('--repair', 'fix what can be fixed without guessing')
    .addOption(cacheOption("the pool's files (none keeps a whole-pool read out of the host page cache)"))
    .action(checkPool);
  pool
    .command('takeover <pool>')
    .description('a pool on RADOS: fence the host that holds it (blocklist its Ceph client) and break its lock, so this host can open it')
    .action(takeoverPool);
  pool
    .command('delete <pool>')
    .description('delete a pool file and its registration')
    .option('--force', 'delete even if the pool holds volumes, or cannot be opened')
    .action(deletePool);
};

interface CreateOptions {
  size?: string;
  path?: string;
  clusterSize?: string;
  raid?: RaidLevel;
  members?: string;
  chunk?: string;
  spares?: string;
  copies?: string;
  force?: boolean;
  rados?: string;
  cephConf?: string;
  id?: string;
}

async function createPool(name: string, opts: CreateOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const registry = new Registry(g.home);
  checkName('pool', name);
  if (opts.raid === undefined) {
    const raidOnly = (['members', 'chunk', 'spares', 'copies', 'force'] as const).filter((o) => opts[o] !== undefined);
    if (raidOnly.length > 0) throw new Error(`${raidOnly.map((o) => `--${o}`).join(', ')} ${raidOnly.length === 1 ? 'goes' : 'go'} with --raid LEVEL`);
  }
  if (opts.rados === undefined) {
    const radosOnly = (['cephConf', 'id'] as const).filter((o) => opts[o] !== undefined);
    if (radosOnly.length > 0) throw new Error(`${radosOnly.map((o) => (o === 'cephConf' ? '--ceph-conf' : '--id')).join(', ')} ${radosOnly.length === 1 ? 'goes' : 'go'} with --rados CEPHPOOL`);
  } else {
    if (opts.raid !== undefined) throw new Error('--rados and --raid exclude each other: RADOS keeps its own replicas');
    if (opts.path !== undefined) throw new Error('--path is for a pool file; a pool on --rados lives in the Ceph pool');
  }
  if (registry.has(name)) throw new Error(`pool '${name}' already exists in ${g.home}`);
  const clusterSize = opts.clusterSize === undefined ? undefined : parseSize(opts.clusterSize);
  if (opts.rados !== undefined) {
    const spec = { cephPool: opts.rados, size: parseSize(opts.size ?? DEFAULT_POOL_SIZE), ...(opts.cephConf !== undefined ? { conf: opts.cephConf } : {}), ...(opts.id !== undefined ? { id: opts.id } : {}) };
    const record = await createRadosBacked(registry, name, spec, clusterSize);
    const summary = await withPool(g.home, name, { readOnly: true }, async ({ pool: p }) => summarize(registry, record, { ...p.stats(), ...poolHealth(p) }));
    report(g, summary, `created pool '${name}': ${formatSize(summary.deviceSize)} on RADOS in Ceph pool '${opts.rados}' (cluster size ${formatSize(summary.clusterSize)})`);
    return;
  }
  if (opts.raid !== undefined) {
    const files = (list: string | undefined): string[] => (list ?? '').split(',').filter((m) => m !== '').map((m) => path.resolve(m));
    const members = files(opts.members);
    if (members.length === 0) throw new Error(`--raid ${opts.raid} needs --members FILE,FILE,…`);
    const spares = files(opts.spares);
    // As mdadm: members that exist size the array; only a set of new files falls back to the default size.
    const size = opts.size !== undefined ? parseSize(opts.size) : [...members, ...spares].some((m) => fs.existsSync(m)) ? undefined : parseSize(DEFAULT_POOL_SIZE);
    const copies = opts.copies === undefined ? undefined : parseCopies(opts.copies);
    const chunk = opts.chunk === undefined ? undefined : parseSize(opts.chunk);
    await createRaidPool(registry, name, opts.raid, { members, spares, size, chunk, copies, force: opts.force === true }, clusterSize);
    const record = registry.get(name);
    const summary = await withPool(g.home, name, { readOnly: true }, async ({ pool: p }) => summarize(registry, record, { ...p.stats(), ...poolHealth(p) }));
    const spared = spares.length > 0 ? ` and ${count(spares.length, 'spare')}` : '';
    report(g, summary, `created pool '${name}': ${formatSize(summary.deviceSize)} on RAID ${opts.raid} over ${members.length} members${spared} (cluster size ${formatSize(summary.clusterSize)})`);
    return;
  }
  const { record, file } = await createFilePool(registry, name, parseSize(opts.size ?? DEFAULT_POOL_SIZE), opts.path, clusterSize);
  const summary = await withPool(g.home, name, { readOnly: true }, async ({ pool: p }) => summarize(registry, record, { ...p.stats(), ...poolHealth(p) }));
  report(g, summary, `created pool '${name}': ${formatSize(summary.deviceSize)} at ${file} (cluster size ${formatSize(summary.clusterSize)})`);
}

/** A pool on a new sparse file (HOME/NAME.pool unless `at` is given), registered once it is whole. */
export function createFilePool(registry: Registry, name: string, size: number, at: string | undefined, clusterSize: number | undefined): Promise<{ record: PoolRecord; file: string }> {
  return createFileBacked(registry, name, size, at, clusterSize);
}

function parseCopies(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 2) throw new Error(`invalid --copies '${text}' (a whole number from 2)`);
  return n;
}

/** A pool on a new RAID array, refusals said in the terms of this command's options. */
function createRaidPool(registry: Registry, name: string, level: RaidLevel, spec: RaidSpec, clusterSize: number | undefined): Promise<void> {
  return createRaidBacked(registry, name, level, spec, clusterSize, raidCreateMessage);
}

async function listPools(_opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const registry = new Registry(g.home);
  const rows: (PoolSummary | { name: string; backing: PoolBacking | null; created: string | null; error: string })[] = [];
  for (const name of registry.names()) {
    let record: PoolRecord | null = null;
    try {
      record = registry.get(name);
      const r = record;
      rows.push(summarize(registry, r, await adminOnPool(g.home, name, { op: 'pool-info' }, { readOnly: true })));
    } catch (err) {
      // One broken, busy or badly registered pool must not hide the others.
      rows.push({ name, backing: record && absoluteBacking(registry, record), created: record && record.created, error: oneLine(err) });
    }
  }
  if (g.json) return printJson(rows);
  if (rows.length === 0) {
    process.stdout.write(`no pools in ${g.home}\n`);
    return;
  }
  const stat = (fn: (s: PoolSummary) => string) => (r: (typeof rows)[number]): string => ('error' in r ? '-' : fn(r));
  printTable(rows, [
    { header: 'NAME', value: (r) => r.name },
    { header: 'SIZE', value: stat((s) => formatSize(s.deviceSize)), align: 'right' },
    { header: 'USED', value: stat((s) => formatSize(s.usedBytes)), align: 'right' },
    { header: 'FREE', value: stat((s) => formatSize(s.freeBytes)), align: 'right' },
    { header: 'PROVISIONED', value: stat((s) => `${formatSize(s.provisionedBytes)} (${percent(s.provisionedBytes, s.totalBytes)})`), align: 'right' },
    { header: 'VOLUMES', value: stat((s) => String(s.volumes)), align: 'right' },
    { header: 'STATE', value: stat((s) => s.state) },
    { header: 'BACKING', value: (r) => [r.backing && describeBacking(r.backing), 'error' in r && `(${r.error})`].filter(Boolean).join('  ') },
  ]);
}

async function poolInfo(name: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const registry = new Registry(g.home);
  const record = registry.get(checkName('pool', name));
  const stats = await adminOnPool(g.home, name, { op: 'pool-info' }, { readOnly: true });
  const reclaimError = stats.reclaimError ?? reclaimProblem(new JobStore(g.home, name).read());
  const summary = summarize(registry, record, { ...stats, ...(reclaimError !== undefined ? { reclaimError } : {}) });
  if (g.json) return printJson(summary);
  const bytes = (n: number): string => `${formatSize(n)} (${n} bytes)`;
  printFields([
    ['name', summary.name],
    ['backing', describeBacking(summary.backing)],
    ['state', summary.state],
    ['uuid', summary.uuid],
    ['created', summary.created],
    ['device size', bytes(summary.deviceSize)],
    ['cluster size', formatSize(summary.clusterSize)],
    ['sub-cluster size', formatSize(summary.subclusterSize)],
    ['capacity', bytes(summary.totalBytes)],
    ['used', `${bytes(summary.usedBytes)}, ${percent(summary.usedBytes, summary.totalBytes)}`],
    ['free', bytes(summary.freeBytes)],
    ['provisioned', `${bytes(summary.provisionedBytes)}, ${percent(summary.provisionedBytes, summary.totalBytes)} of capacity${summary.overcommitted ? ' (overcommitted)' : ''}`],
    ['volumes', String(summary.volumes)],
    ['layers', String(summary.layers)],
    ['journal', formatSize(summary.journalBytes)],
    ['on host', summary.hostAllocatedBytes === null ? '-' : `${bytes(summary.hostAllocatedBytes)} allocated`],
    ...(reclaimError !== undefined ? [['reclaim failed', reclaimError] as [string, string]] : []),
  ]);
}

async function checkPool(name: string, opts: { repair?: boolean; cache: CacheMode }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const repair = opts.repair === true;
  // Without --repair nothing is written: a bad copy with a good one beside it is reported pending. A pool
  // stopped uncleanly is still opened for writing once, to replay its journal (see openRegisteredPool).
  // On a served pool the server runs the check, holding writes for the walk (heldWritesMs); --repair needs it stopped.
  const record = new Registry(g.home).get(checkName('pool', name));
  const redundant = record.backing.kind === 'raid' && record.backing.level !== '0';
  const result = await adminOnPool(g.home, name, { op: 'pool-check', repair }, { readOnly: !repair, direct: opts.cache === 'none' });
  const remaining = result.problems.filter((p) => !p.repaired).length;
  if (g.json) printJson({ pool: name, clean: remaining === 0, ...result, ...(repair && remaining > 0 ? { unrepairedBecause: whyUnrepaired(result.problems, redundant) } : {}) });
  else printCheck(name, result, repair);
  if (remaining > 0) {
    const pending = result.pendingRepairs > 0 ? `, ${result.pendingRepairs} of them pending repair (a good copy exists)` : '';
    // With --repair, the one line says why what is left was left: a repair that repaired nothing must not read as a failed one.
    const why = repair ? `; ${result.repaired === 0 ? 'nothing repaired' : `${result.repaired} repaired`}: ${whyUnrepaired(result.problems, redundant)}` : ' (try --repair)';
    process.stderr.write(`strata: pool '${name}' has ${count(remaining, 'unrepaired problem')}${repair ? '' : pending}${why}\n`);
    process.exitCode = 1;
  }
}

function printCheck(name: string, result: CheckReport, repaired: boolean): void {
  if (result.problems.length > 0) {
    printTable(result.problems, [
      { header: 'PROBLEM', value: (p) => p.kind },
      { header: 'WHERE', value: where },
      { header: 'STATE', value: (p) => (p.repaired ? 'repaired' : p.pending ? 'pending' : 'open') },
      { header: 'DETAIL', value: (p) => oneLine(p.message) },
    ]);
  }
  const parts = [
    `${count(result.clustersChecked, 'cluster')} checked`,
    count(result.problems.length, 'problem'),
    `${count(result.leakedClusters, 'leaked cluster')}`,
    `${count(result.corruptBlocks, 'corrupt block')}`,
  ];
  if (result.quarantinedClusters > 0) parts.push(`${count(result.quarantinedClusters, 'cluster')} held in quarantine`);
  if (result.pendingRepairs > 0) parts.push(count(result.pendingRepairs, 'pending repair'));
  if (repaired) parts.push(`${result.repaired} repaired`);
  process.stdout.write(`pool '${name}': ${parts.join(', ')}\n`);
}

function where(p: CheckProblem): string {
  const parts: string[] = [];
  if (p.volume !== undefined) parts.push(`volume ${p.volume}`);
  if (p.layer !== undefined) parts.push(`layer ${p.layer}`);
  if (p.virtualOffset !== undefined) parts.push(`offset ${p.virtualOffset}`);
  if (p.hostOffset !== undefined) parts.push(`host offset ${p.hostOffset}`);
  return parts.length > 0 ? parts.join(', ') : '-';
}

async function deletePool(name: string, opts: { force?: boolean }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const registry = new Registry(g.home);
  const force = opts.force === true;
  let record: PoolRecord;
  try {
    record = registry.get(checkName('pool', name));
  } catch (err) {
    if (!force || !registry.has(name)) throw err;
    registry.remove(name);
    report(g, { deleted: name, path: null, kept: null }, `deleted the damaged registration of pool '${name}'`);
    return;
  }
  // The file is removed only once it has opened as a Strata pool: a registration
  // edited to point elsewhere must not make `delete --force` remove any file.
  let isPool = false;
  let arrayUuid: string | undefined;
  try {
    const { pool, close, raid } = await openRegisteredPool(g.home, name, { readOnly: true });
    isPool = true;
    arrayUuid = raid?.array.geometry.uuid;
    const volumes = pool.stats().volumes > 0 ? (await pool.listVolumes()).map((v) => v.name) : [];
    await close();
    if (volumes.length > 0 && !force) {
      const shown = volumes.slice(0, 5).join(', ') + (volumes.length > 5 ? ', …' : '');
      throw new Error(`pool '${name}' holds ${count(volumes.length, 'volume')} (${shown}); use --force to delete it with them`);
    }
  } catch (err) {
    // A pool another process is serving is never deleted under it, forced or not.
    if (!force || err instanceof PoolInUseError) throw err;
  }
  if (record.backing.kind === 'rados') {
    const where = `rados:${record.backing.cephPool}/${record.backing.image}`;
    if (isPool) await destroyRadosBacked(registry, record);
    // Deleted from another home that had it registered too: nothing is left to keep.
    const kept = !isPool && (await radosImageExists(record).catch(() => true));
    registry.remove(name);
    const text = isPool ? `deleted pool '${name}' (removed its objects from ${where})` : kept ? `deleted pool '${name}' from the registry; left ${where} in place (it does not open as a pool)` : `deleted pool '${name}' from the registry (its objects were already gone from ${where})`;
    report(g, { deleted: name, path: isPool ? where : null, kept: kept ? where : null }, text);
    return;
  }
  if (record.backing.kind === 'raid') {
    const members = backingType(record.backing).files(registry, record);
    registry.remove(name);
    if (isPool) for (const m of members) fs.rmSync(m, { force: true });
    if (isPool && arrayUuid !== undefined) forgetPending(g.home, arrayUuid);
    report(g, { deleted: name, path: null, kept: isPool ? null : members.join(',') }, isPool ? `deleted pool '${name}' (removed its ${members.length} RAID members)` : `deleted pool '${name}' from the registry; left its members in place (they do not open as a pool)`);
    return;
  }
  const file = registry.filePath(record);
  registry.remove(name);
  if (isPool) {
    fs.rmSync(file, { force: true });
    report(g, { deleted: name, path: file, kept: null }, `deleted pool '${name}' (removed ${file})`);
  } else if (fs.existsSync(file)) {
    report(g, { deleted: name, path: null, kept: file }, `deleted pool '${name}' from the registry; left ${file} in place (it does not open as a pool)`);
  } else {
    report(g, { deleted: name, path: null, kept: null }, `deleted pool '${name}' from the registry (its file was already gone)`);
  }
}

async function takeoverPool(name: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const registry = new Registry(g.home);
  const record = registry.get(checkName('pool', name));
  if (record.backing.kind !== 'rados') throw new Error(`pool '${name}' is not on RADOS: only a pool on RADOS is shared between hosts (a local pool's lock goes with its process)`);
  const { fenced } = await takeOverRados(registry, record);
  const text = fenced.length === 0 ? `pool '${name}' was not held by anyone: nothing to fence; it opens here as it is` : `took over pool '${name}': fenced ${fenced.join('; ')}; its lock is broken and the pool opens here`;
  report(g, { pool: name, fenced }, text);
}

export function summarize(registry: Registry, record: PoolRecord, stats: PoolStats & PoolHealth): PoolSummary {
  const backing = absoluteBacking(registry, record);
  let hostAllocatedBytes: number | null = null;
  if (backing.kind === 'file') hostAllocatedBytes = fs.statSync(backing.path).blocks * 512;
  return {
    name: record.name,
    backing,
    created: record.created,
    ...stats,
    totalBytes: stats.totalClusters * stats.clusterSize,
    usedBytes: stats.usedClusters * stats.clusterSize,
    freeBytes: stats.freeClusters * stats.clusterSize,
    hostAllocatedBytes,
  };
}

function absoluteBacking(registry: Registry, record: PoolRecord): PoolBacking {
  return backingType(record.backing).absolute(registry, record);
}

function describeBacking(b: PoolBacking): string {
  return backingType(b).describe(b);
}

function count(n: number, thing: string): string {
  return `${n} ${thing}${n === 1 ? '' : 's'}`;
}

function percent(part: number, whole: number): string {
  return whole === 0 ? '0%' : `${((100 * part) / whole).toFixed(1)}%`;
}
