import { jobsFor } from '../../src/host/jobs.js';
import { rebuildJob } from '../../src/host/rebuild-job.js';
import { scrubJob } from '../../src/host/scrub-job.js';
import path from 'node:path';
import { Command } from 'commander';
import { assembleArray, createArray, DEFAULT_CHUNK, type ArrayStatus, type RaidArray, type RaidLevel, type RebuildProgress, type ScrubReport } from '../../src/raid/index.js';
import { cacheOption, type CacheMode } from '../cache-option.js';
import { ControlClient, type ControlOk } from '../control-client.js';
import type { ControlRequest } from '../control-protocol.js';
import { globals } from '../output.js';
import { loadPending, repairPendingNow, savePending } from '../pending-store.js';
import { memberArg, newMember, recordMembers } from '../raid-members.js';
import { Registry } from '../registry.js';
import { formatSize, parseSize } from '../size.js';
import type { CommandGroup } from './index.js';

function list(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function level(text: string): RaidLevel {
  const n = Number(text);
  if (![0, 1, 5, 6, 10].includes(n)) throw new Error(`invalid RAID level '${text}' (use 0, 1, 5, 6 or 10)`);
  return n as RaidLevel;
}

function say(line: string): void {
  process.stderr.write(`${line}\n`);
}

function printStatus(st: ArrayStatus, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(st, null, 2)}\n`);
    return;
  }
  const out: string[] = [];
  out.push(`raid${st.level}${st.name ? ` ${st.name}` : ''}  uuid ${st.uuid}`);
  out.push(`  size ${formatSize(st.size)}  chunk ${formatSize(st.chunk)}  layout ${st.layout}  state ${st.state}  events ${st.events}`);
  out.push('  role   state       device');
  for (const m of st.members) {
    const extra = m.rebuilt !== undefined ? `  (${(m.rebuilt * 100).toFixed(1)}% rebuilt)` : '';
    out.push(`  ${String(m.role).padEnd(6)} ${m.state.padEnd(11)} ${m.device}${extra}`);
  }
  for (const s of st.spares) out.push(`  spare  ${'spare'.padEnd(11)} ${s.device}`);
  if (st.rebuild) out.push(`  rebuild: member ${st.rebuild.role} ${(st.rebuild.fraction * 100).toFixed(1)}%`);
  const c = st.counters;
  out.push(`  repairs ${c.repairs}  pending repairs ${c.pendingRepairs}  read errors ${c.readErrors}  write errors ${c.writeErrors}  mismatches ${c.mismatches}  resynced regions ${c.resyncedRegions}  dirty regions ${st.dirtyRegions}`);
  const shown = st.pendingRepairs.slice(0, 8);
  for (const p of shown) out.push(`  pending: ${formatSize(p.length)} at ${p.offset} on member(s) ${p.members.join(', ')}`);
  if (st.pendingRepairs.length > shown.length) out.push(`  pending: … and ${st.pendingRepairs.length - shown.length} more (--json lists them all)`);
  if (st.pendingRepairs.length > 0) out.push('  (found while open read-only; the next read-write open of the pool, pool check --repair or raid scrub --repair rewrites them)');
  process.stdout.write(`${out.join('\n')}\n`);
}

/** A progress bar on a terminal; a line per 10% otherwise, so logs stay readable. */
function progressPrinter(what: string): { update: (fraction: number, bytes: number) => void; done: () => void } {
  const tty = process.stderr.isTTY === true;
  const started = Date.now();
  let lastDecile = -1;
  return {
    update: (fraction, bytes) => {
      const secs = Math.max(0.001, (Date.now() - started) / 1000);
      const rate = `${formatSize(Math.round(bytes / secs))}/s`;
      if (tty) {
        const width = 30;
        const filled = Math.round(fraction * width);
        process.stderr.write(`\r${what} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(fraction * 100).toFixed(1)}% ${rate}   `);
      } else {
        const decile = Math.floor(fraction * 10);
        if (decile > lastDecile) {
          lastDecile = decile;
          say(`${what}: ${(fraction * 100).toFixed(0)}% (${rate})`);
        }
      }
    },
    done: () => {
      if (tty) process.stderr.write('\n');
    },
  };
}

async function open(home: string, members: string[], readOnly = false, direct = false): Promise<RaidArray> {
  if (members.length === 0) throw new Error('no members given (use --members a.img,b.img,…)');
  const { array, warnings } = await assembleArray(members, { readOnly, onEvent: say, direct });
  for (const w of warnings) say(`warning: ${w}`);
  loadPending(home, array, (m) => say(`warning: ${m}`));
  return array;
}

async function rebuildForeground(array: RaidArray, rate: number, job?: { home: string; pool: string | undefined }): Promise<void> {
  if (!array.needsRebuild()) return;
  const bar = progressPrinter('rebuilding');
  const onProgress = (p: RebuildProgress): void => bar.update(p.fraction, p.bytesDone);
  // A named pool's rebuild is one of its jobs (listed, cancellable with Ctrl-C, reported if this process dies).
  await (job?.pool ? rebuildJob(jobsFor(job.home, job.pool), array, rate, onProgress) : array.rebuild({ rate, onProgress }));
  bar.done();
}

/** Runs `fn` on the array opened from `members`; the repairs it still has pending afterwards are stored in the home. */
async function withArray(home: string, members: string[], fn: (a: RaidArray) => Promise<void>, readOnly = false, direct = false): Promise<void> {
  const array = await open(home, members, readOnly, direct);
  try {
    await fn(array);
  } finally {
    await array.close();
    savePending(home, array);
  }
}

/** Where the array is: --members, or the pool it carries (its registered members; paths relative to the home). */
interface Where {
  members?: string[];
  pool?: string;
}

function membersOf(where: Where, cmd: Command): string[] {
  if (where.members && where.pool) throw new Error('give either a pool name or --members, not both');
  if (where.members) return where.members;
  if (!where.pool) throw new Error('which array? give a pool name or --members a.img,b.img,…');
  const registry = new Registry(globals(cmd).home);
  const record = registry.get(where.pool);
  if (record.backing.kind !== 'raid') throw new Error(`pool '${where.pool}' is not on a RAID array`);
  const home = path.resolve(registry.home);
  return record.backing.members.map((m) => path.resolve(home, m));
}

function membersOption(cmd: Command): Command {
  return cmd.option('--members <files>', 'the array members, comma-separated, in any order', list);
}

function poolOption(cmd: Command): Command {
  return membersOption(cmd).option('--pool <name>', 'the array under this registered pool');
}

function waitOptions(cmd: Command): Command {
  return cmd
    .option('--wait', 'wait for the rebuild, with progress (the default unless the pool is being served)')
    .option('--no-wait', 'record the new member and return; the rebuild goes on in the server, or resumes at the next assembly');
}

function rateOption(cmd: Command): Command {
  return cmd.option('--rate <size>', 'rebuild rate limit per second, e.g. 100M (default unlimited)', parseSize);
}

/**
 * The control channel of the pool the command names, when `strata serve`
 * holds that pool (its members are locked, so the server does the work);
 * undefined otherwise, and the command opens the array itself.
 */
async function servedPool(where: Where, cmd: Command): Promise<ControlClient | undefined> {
  if (!where.pool || where.members) return undefined;
  const home = globals(cmd).home;
  if (new Registry(home).get(where.pool).backing.kind !== 'raid') throw new Error(`pool '${where.pool}' is not on a RAID array`);
  return ControlClient.connect(home, where.pool);
}

/** One request to the server, its events printed as the in-process commands print theirs, the progress as a bar. */
async function online(client: ControlClient, req: ControlRequest, what?: string): Promise<ControlOk & { status: ArrayStatus }> {
  const bar = what ? progressPrinter(what) : undefined;
  let first: number | undefined;
  try {
    const reply = await client.request(req, (p) => {
      // A rebuild joined midway: the rate shown is of the bytes done since the command began.
      if (first === undefined && p.progress < 1) {
        first = p.bytes;
        return;
      }
      bar?.update(p.progress, p.bytes - (first ?? 0));
    });
    bar?.done();
    for (const m of reply.messages) say(m);
    if (!reply.status) throw new Error(`the server of pool '${client.pool}' answered without the array's status`);
    return { ...reply, status: reply.status };
  } finally {
    client.close();
  }
}

/** Keeps the registry's member list in step with the array a pool-named command changed. */
function record(where: Where, cmd: Command, a: RaidArray): void {
  if (where.pool && !where.members) recordMembers(new Registry(globals(cmd).home), where.pool, a);
}

function rebuildingLine(pool: string, st: ArrayStatus): void {
  if (st.state === 'rebuilding') say(`rebuilding in the background (strata raid status ${pool}; strata raid rebuild ${pool} waits for it)`);
}

/** A member on the command line: for a pool, by the absolute path the array knows it by. */
function memberFor(where: Where, member: string): string {
  return where.pool && !where.members ? memberArg(member) : member;
}

export const raidCommands: CommandGroup = (program) => {
  const raid = program.command('raid').description('software RAID 0, 1, 5, 6 and 10 over member files');

  raid
    .command('create')
    .description('create an array; member files that do not exist are created to fit --size')
    .requiredOption('--level <n>', 'RAID level: 0, 1, 5, 6 or 10', level)
    .requiredOption('--members <files>', 'member files, comma-separated', list)
    .option('--size <size>', 'array size (default: all the members hold)', parseSize)
    .option('--chunk <size>', `chunk size (default ${formatSize(DEFAULT_CHUNK)})`, parseSize)
    .option('--copies <n>', 'RAID 10: copies of each chunk (default 2)', (v) => Number(v))
    .option('--spares <files>', 'hot spares, comma-separated', list)
    .option('--name <name>', 'array name, recorded in the superblocks')
    .option('--bitmap-region <size>', 'member bytes per write-intent bit (default 64M)', parseSize)
    .option('--force', 'reuse members that belong to another array')
    .action(async (o: { level: RaidLevel; members: string[]; size?: number; chunk?: number; copies?: number; spares?: string[]; name?: string; bitmapRegion?: number; force?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const array = await createArray({
        level: o.level,
        members: o.members,
        ...(o.spares ? { spares: o.spares } : {}),
        ...(o.size !== undefined ? { size: o.size } : {}),
        ...(o.chunk !== undefined ? { chunk: o.chunk } : {}),
        ...(o.copies !== undefined ? { copies: o.copies } : {}),
        ...(o.name ? { name: o.name } : {}),
        ...(o.bitmapRegion !== undefined ? { bitmapRegion: o.bitmapRegion } : {}),
        force: o.force ?? false,
        onEvent: say,
      });
      try {
        printStatus(array.status(), g.json);
      } finally {
        await array.close();
      }
    });

  raid
    .command('assemble')
    .description('assemble an array from its members in any order, report stale, foreign and missing ones, resync after an unclean shutdown')
    .argument('<members...>', 'member files')
    .action(async (members: string[], _o: unknown, cmd: Command) => {
      await withArray(globals(cmd).home, members, async (a) => printStatus(a.status(), globals(cmd).json));
    });

  membersOption(raid.command('status').description('per-member state, degraded or not, rebuild progress, repair counters'))
    .argument('[pool]', 'the pool whose array to show (or give --members)')
    .action(async (pool: string | undefined, o: { members?: string[] }, cmd: Command) => {
      const where = { ...o, ...(pool ? { pool } : {}) };
      const json = globals(cmd).json;
      const client = await servedPool(where, cmd);
      if (client) return printStatus((await online(client, { op: 'status' })).status, json);
      await withArray(globals(cmd).home, membersOf(where, cmd), async (a) => printStatus(a.status(), json), true);
    });

  rateOption(poolOption(raid.command('fail').description('mark a member faulty (refused if the array could not survive it); a hot spare takes over and is rebuilt')))
    .argument('<member>', 'the member file, or its role number')
    .action(async (member: string, o: Where & { rate?: number }, cmd: Command) => {
      const client = await servedPool(o, cmd);
      if (client) {
        const r = await online(client, { op: 'fail', member: memberFor(o, member), ...(o.rate !== undefined ? { rate: o.rate } : {}) });
        say(`${member} marked faulty`);
        return rebuildingLine(o.pool!, r.status);
      }
      await withArray(globals(cmd).home, membersOf(o, cmd), async (a) => {
        await a.fail(memberFor(o, member));
        say(`${member} marked faulty`);
        record(o, cmd, a);
        // A hot spare took the role: rebuild it now, as md would in the background.
        await rebuildForeground(a, o.rate ?? 0);
      });
    });

  poolOption(raid.command('remove').description('remove a faulty or missing member (or a spare)'))
    .argument('<member>', 'the member file, or its role number')
    .action(async (member: string, o: Where, cmd: Command) => {
      const client = await servedPool(o, cmd);
      if (client) {
        await online(client, { op: 'remove', member: memberFor(o, member) });
        return say(`${member} removed`);
      }
      await withArray(globals(cmd).home, membersOf(o, cmd), async (a) => {
        await a.remove(memberFor(o, member));
        say(`${member} removed`);
        record(o, cmd, a);
      });
    });

  waitOptions(rateOption(poolOption(raid.command('add').description('add a member: it fills a missing role and is rebuilt, or becomes a hot spare'))))
    .argument('<file>', 'the new member file (created at member size if absent)')
    .action(async (file: string, o: Where & { rate?: number; wait?: boolean }, cmd: Command) => {
      whichArray(o, cmd);
      const said = (role: number | 'spare'): void => say(role === 'spare' ? `${file} added as a hot spare` : `${file} takes member role ${role}`);
      const client = await servedPool(o, cmd);
      if (client) {
        const r = await online(client, { op: 'add', file: path.resolve(file), ...(o.rate !== undefined ? { rate: o.rate } : {}) });
        said(r.role!);
        return o.wait === true ? waitOnline(o.pool!, cmd) : rebuildingLine(o.pool!, r.status);
      }
      await withArray(globals(cmd).home, membersOf(o, cmd), async (a) => {
        const role = await a.add(newMember(memberFor(o, file), a));
        said(role);
        record(o, cmd, a);
        if (o.wait !== false) await rebuildForeground(a, o.rate ?? 0);
      });
    });

  waitOptions(rateOption(poolOption(raid.command('replace').description('replace a member with a new file (hot: an active member serves until the new one is whole), then rebuild'))))
    .argument('<old>', 'the member to replace (file or role number)')
    .argument('<new>', 'the new member file (created at member size if absent)')
    .action(async (old: string, file: string, o: Where & { rate?: number; wait?: boolean }, cmd: Command) => {
      whichArray(o, cmd);
      const client = await servedPool(o, cmd);
      if (client) {
        const r = await online(client, { op: 'replace', member: memberFor(o, old), file: path.resolve(file), ...(o.rate !== undefined ? { rate: o.rate } : {}) });
        say(`${file} takes member role ${String(r.role)}`);
        return o.wait === true ? waitOnline(o.pool!, cmd) : rebuildingLine(o.pool!, r.status);
      }
      await withArray(globals(cmd).home, membersOf(o, cmd), async (a) => {
        const role = await a.replace(memberFor(o, old), newMember(memberFor(o, file), a));
        say(`${file} takes member role ${role}`);
        record(o, cmd, a);
        if (o.wait !== false) await rebuildForeground(a, o.rate ?? 0);
      });
    });

  rateOption(membersOption(raid.command('rebuild').description('finish a rebuild in the foreground, from its checkpoint (of a served pool: wait for the server\'s)')))
    .argument('[pool]', 'the pool whose array to rebuild (or give --members)')
    .addOption(cacheOption('the members (of an array not being served)'))
    .action(async (pool: string | undefined, o: { members?: string[]; rate?: number; cache: CacheMode }, cmd: Command) => {
      const where = { ...o, ...(pool ? { pool } : {}) };
      const client = await servedPool(where, cmd);
      if (client) {
        const r = await online(client, { op: 'rebuild', ...(o.rate !== undefined ? { rate: o.rate } : {}) }, 'rebuilding');
        if (!r.rebuilding) say('nothing to rebuild: every member is in sync');
        return;
      }
      await withArray(
        globals(cmd).home,
        membersOf(where, cmd),
        async (a) => {
          if (!a.needsRebuild()) say('nothing to rebuild: every member is in sync');
          await rebuildForeground(a, o.rate ?? 0, { home: globals(cmd).home, pool: where.pool });
        },
        false,
        o.cache === 'none',
      );
    });

  membersOption(raid.command('scrub').description('compare mirrors / parity over the whole array and report mismatches (on a degraded array: what redundancy remains)'))
    .argument('[pool]', 'the pool whose array to scrub (or give --members)')
    .option('--repair', 'make mismatching copies agree (RAID 6 locates a bad data block from P and Q; 3+ mirrors vote)')
    .addOption(cacheOption('the members (of an array not being served)'))
    .action(async (pool: string | undefined, o: { members?: string[]; repair?: boolean; cache: CacheMode }, cmd: Command) => {
      const where = { ...o, ...(pool ? { pool } : {}) };
      const client = await servedPool(where, cmd);
      if (client) return printScrub((await online(client, { op: 'scrub', repair: o.repair ?? false }, 'scrubbing')).report!, globals(cmd).json);
      await withArray(
        globals(cmd).home,
        membersOf(where, cmd),
        async (a) => {
          // Repairs a read-only open left pending name the bad member: fix them from the others before parity is trusted.
          if (o.repair) await repairPendingNow(globals(cmd).home, a, say);
          const bar = progressPrinter('scrubbing');
          const onProgress = (f: number): void => bar.update(f, f * a.size);
          const report = await (where.pool ? scrubJob(jobsFor(globals(cmd).home, where.pool), a, o.repair ?? false, onProgress) : a.scrub({ repair: o.repair ?? false, onProgress }));
          bar.done();
          printScrub(report, globals(cmd).json);
        },
        false,
        o.cache === 'none',
      );
    });
};

/** add and replace change an array named by one option or the other: without either the command line is incomplete. */
function whichArray(where: Where, cmd: Command): void {
  if (!where.pool && !where.members) cmd.error("error: required option '--pool <name>' or '--members <files>' not specified");
}

/** `--wait` on a served pool: the server's rebuild, followed to its end with a progress bar. */
async function waitOnline(pool: string, cmd: Command): Promise<void> {
  const client = await servedPool({ pool }, cmd);
  if (!client) throw new Error(`pool '${pool}' is no longer being served; its rebuild resumes at the next open`);
  await online(client, { op: 'rebuild' }, 'rebuilding');
}

function printScrub(report: ScrubReport, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  for (const m of report.mismatches) {
    process.stdout.write(`mismatch at ${m.offset} length ${m.length}: member(s) ${m.members.join(', ')}${m.repaired ? ' repaired' : ''}\n`);
  }
  const unchecked = report.bytesUnchecked > 0 ? `; ${formatSize(report.bytesUnchecked)} not checked (no redundancy left with members out)` : '';
  process.stdout.write(`scrubbed ${formatSize(report.bytesChecked)}: ${report.mismatches.length} mismatch(es)${report.repaired ? ', repaired' : ''}${unchecked}\n`);
  if (report.mismatches.length > 0 && !report.repaired) process.exitCode = 1;
}
