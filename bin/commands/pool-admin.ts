import type { Command } from 'commander';
import { examineMemberFile, filesIn } from '../../src/host/member-scan.js';
import { globals, printFields, printJson, printTable, report } from '../output.js';
import { importFilePool, importRadosPool, importRaidPool, scanArrays } from '../../src/host/pool-import.js';
import { checkName, Registry } from '../../src/host/registry.js';
import { adminOnPool } from '../../src/host/admin-client.js';
import { formatSize, parseSize } from '../size.js';
import { summarize } from './pool.js';
import type { CommandGroup } from './index.js';

/** `pool import`, `pool resize` and `raid examine`: the pool-level verbs that work from the pool's and members' own headers. */
export const poolAdminCommands: CommandGroup = (program) => {
  const pool = subcommand(program, 'pool');
  pool
    .command('import [pool] [file]')
    .description('register an existing pool file, or a RAID array found by its members\' superblocks (without POOL: list what is found)')
    .option('--raid <members...>', 'RAID member files to look for arrays among')
    .option('--scan <dir>', 'look for RAID members among the files in DIR')
    .option('--uuid <uuid>', 'the array to import when several are found')
    .option('--rados <cephpool>', 'register the pool of this name that another home made in this Ceph pool')
    .option('--ceph-conf <file>', 'with --rados: the Ceph config (default: librados\'s search, /etc/ceph/ceph.conf)')
    .option('--id <client>', 'with --rados: the Ceph client name without "client." (default admin)')
    .action(importPool);
  pool
    .command('resize <pool> <size>')
    .description('grow a pool to SIZE, or by +SIZE (grow only; online when served)')
    .action(resizePool);
  subcommand(program, 'raid')
    .command('examine <member>')
    .description("print a member's superblock: array UUID, level, role, state, event count, size, bitmap (as mdadm --examine)")
    .action(examine);
};

function subcommand(program: Command, name: string): Command {
  const found = program.commands.find((c) => c.name() === name);
  if (!found) throw new Error(`no '${name}' command to extend`);
  return found;
}

interface ImportOptions {
  raid?: string[];
  scan?: string;
  uuid?: string;
  rados?: string;
  cephConf?: string;
  id?: string;
}

async function importPool(name: string | undefined, file: string | undefined, opts: ImportOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const registry = new Registry(g.home);
  const raid = opts.raid !== undefined || opts.scan !== undefined;
  if (opts.rados !== undefined) {
    if (name === undefined || file !== undefined || raid) throw new Error('pool import --rados CEPHPOOL takes only POOL (the name it has in the Ceph pool)');
    const spec = { cephPool: opts.rados, ...(opts.cephConf !== undefined ? { conf: opts.cephConf } : {}), ...(opts.id !== undefined ? { id: opts.id } : {}) };
    const { record, stats, heldBy } = await importRadosPool(registry, checkName('pool', name), spec);
    if (stats === undefined) {
      report(g, { name, backing: record.backing, heldBy }, `imported pool '${name}' from Ceph pool '${opts.rados}'; it is held elsewhere right now (${heldBy ?? ''})`);
      return;
    }
    const summary = summarize(registry, record, stats);
    report(g, summary, `imported pool '${name}': ${formatSize(summary.deviceSize)} on RADOS in Ceph pool '${opts.rados}', ${count(summary.volumes, 'volume')}, ${summary.state}`);
    return;
  }
  if (opts.cephConf !== undefined || opts.id !== undefined) throw new Error('--ceph-conf and --id go with --rados CEPHPOOL');
  if (!raid) {
    if (name === undefined || file === undefined) throw new Error('pool import takes POOL FILE, or --raid MEMBER… / --scan DIR (with or without POOL)');
    if (opts.uuid !== undefined) throw new Error('--uuid goes with --raid or --scan');
    const { record, stats } = await importFilePool(registry, checkName('pool', name), file);
    const summary = summarize(registry, record, stats);
    report(g, summary, `imported pool '${name}': ${formatSize(summary.deviceSize)} at ${file}, ${count(summary.volumes, 'volume')}, ${summary.state}`);
    return;
  }
  if (file !== undefined) throw new Error('with --raid or --scan, pool import takes only POOL (the members come from the option)');
  const files = [...(opts.raid ?? []), ...(opts.scan !== undefined ? filesIn(opts.scan) : [])];
  if (name === undefined) {
    const arrays = await scanArrays(registry, files);
    if (g.json) return printJson(arrays);
    if (arrays.length === 0) {
      process.stdout.write(`no Strata RAID members among ${count(files.length, 'file')}\n`);
      return;
    }
    for (const a of arrays) {
      const where = a.registeredAs === null ? 'not registered (import it with: strata pool import NAME ...)' : `registered as pool '${a.registeredAs}'`;
      process.stdout.write(`array ${a.uuid}${a.name ? ` (${a.name})` : ''}: RAID ${a.level}, ${formatSize(a.size)}, ${a.present} of ${a.members} members present; ${where}\n`);
      for (const m of a.found) process.stdout.write(`  ${String(m.role).padEnd(6)} ${m.state.padEnd(10)} events ${String(m.events).padEnd(6)} ${m.path}\n`);
    }
    return;
  }
  const { record, stats, array } = await importRaidPool(registry, checkName('pool', name), files, opts.uuid);
  const summary = summarize(registry, record, stats);
  const members = record.backing.kind === 'raid' ? record.backing.members.length : 0;
  report(g, summary, `imported pool '${name}': ${formatSize(summary.deviceSize)} on RAID ${array.level} array ${array.uuid} (${count(members, 'member')}), ${count(summary.volumes, 'volume')}, ${summary.state}`);
}

async function resizePool(name: string, sizeText: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  checkName('pool', name);
  const by = sizeText.startsWith('+');
  let size = parseSize(by ? sizeText.slice(1) : sizeText);
  if (by) size += (await adminOnPool(g.home, name, { op: 'pool-info' }, { readOnly: true })).deviceSize;
  const r = await adminOnPool(g.home, name, { op: 'pool-resize', size }, { readOnly: false });
  report(g, { pool: name, ...r }, `resized pool '${name}': ${formatSize(r.oldSize)} -> ${formatSize(r.size)} (capacity ${formatSize(r.oldCapacityBytes)} -> ${formatSize(r.capacityBytes)})`);
}

async function examine(member: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const ex = await examineMemberFile(member);
  if (!ex) throw new Error(`${member} holds no Strata RAID superblock`);
  if (g.json) return printJson({ member, ...ex });
  printFields([
    ['member', member],
    ['array uuid', ex.arrayUuid],
    ['name', ex.name || '-'],
    ['level', `raid${ex.level}${ex.level === 10 ? ` (${ex.copies} copies)` : ''}`],
    ['members', String(ex.members)],
    ['device uuid', ex.deviceUuid],
    ['role', String(ex.role)],
    ['state', ex.state === 'released' ? 'released (no longer a member of the array; free to reuse)' : ex.state],
    ['events', String(ex.events)],
    ['clean', ex.clean ? 'yes' : 'no'],
    ['array size', `${formatSize(ex.arraySize)} (${ex.arraySize} bytes)`],
    ['member data', `${formatSize(ex.memberDataSize)} at offset ${formatSize(ex.dataOffset)}`],
    ['chunk', formatSize(ex.chunk)],
    ['bitmap', `${formatSize(ex.bitmap.regionBytes)} regions, ${ex.bitmap.dirtyRegions} of ${ex.bitmap.regions} dirty`],
    ['created', ex.created],
    ...(ex.problem !== undefined ? ([['problem', ex.problem]] as [string, string][]) : []),
  ]);
  process.stdout.write('\n');
  printTable(
    ex.table.map((e, i) => ({ ...e, i })),
    [
      { header: 'ROLE', value: (e) => (e.i < ex.members ? String(e.i) : 'spare') },
      { header: 'STATE', value: (e) => e.state },
      { header: 'DEVICE', value: (e) => (e.device === '' ? '-' : e.device) + (e.device === ex.deviceUuid ? ' (this one)' : '') },
    ],
  );
}

function count(n: number, thing: string): string {
  return `${n} ${thing}${n === 1 ? '' : 's'}`;
}
