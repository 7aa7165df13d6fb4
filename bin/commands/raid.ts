import path from 'node:path';
import { Command } from 'commander';
import { assembleArray, createArray, DEFAULT_CHUNK, type ArrayStatus, type RaidArray, type RaidLevel, type ScrubReport } from '../../src/raid/index.js';
import { cacheOption, type CacheMode } from '../cache-option.js';
import { ControlClient } from '../../src/host/control-client.js';
import { jobsFor } from '../../src/host/jobs.js';
import { globals, printJson } from '../output.js';
import { loadPending, savePending } from '../../src/host/pending-store.js';
import { runRaid, type RaidProgress, type RaidRequest, type RaidResult } from '../../src/host/raid-admin.js';
import { memberArg, recordMembers } from '../../src/host/raid-members.js';
import { Registry } from '../../src/host/registry.js';
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
  return membersOption(cmd).option('--pool <name>', 'the array under this registered pool (the same as giving POOL first)');
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
 * The words of a verb that names its array: POOL first, as `volume list POOL`
 * does, unless --pool or --members named it. A missing or extra word is a
 * command line error (exit 2), as commander's own are.
 */
function named(o: Where, args: string[], words: string[], cmd: Command): { where: Where; words: string[] } {
  const byOption = o.pool !== undefined || o.members !== undefined;
  const want = byOption ? words : ['POOL', ...words];
  if (args.length !== want.length) cmd.error(`error: '${cmd.name()}' takes ${want.join(' ')}${byOption ? '' : ' (or --members a.img,b.img,… instead of POOL)'}`);
  return byOption ? { where: o, words: args } : { where: { pool: args[0]! }, words: args.slice(1) };
}

/** The array of a verb with an optional POOL (status, rebuild, scrub). */
function optionalPool(pool: string | undefined, o: Where): Where {
  if (pool !== undefined && o.pool !== undefined && pool !== o.pool) throw new Error(`two pools named: '${pool}' and --pool '${o.pool}'`);
  const p = pool ?? o.pool;
  return { ...(o.members ? { members: o.members } : {}), ...(p !== undefined ? { pool: p } : {}) };
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

/** A progress bar for a verb's progress; a rebuild joined midway shows the rate of the bytes done since the command began. */
function progressFor(what: string): { update: (p: RaidProgress) => void; done: () => void } {
  let bar: ReturnType<typeof progressPrinter> | undefined;
  let first: number | undefined;
  return {
    update: (p) => {
      if (first === undefined && p.progress < 1) {
        first = p.bytes;
        return;
      }
      bar ??= progressPrinter(what);
      bar.update(p.progress, p.bytes - (first ?? 0));
    },
    done: () => bar?.done(),
  };
}

/**
 * Runs one RAID verb (src/host/raid-admin.ts) wherever the array is: over the
 * control socket of the server that holds the pool, or in-process on the
 * array this command assembles. The array's events are printed as they come
 * (in-process) or as the server collected them, then the result is returned
 * for the command to print the same way in both cases.
 */
async function raidVerb(where: Where, cmd: Command, build: (served: boolean) => RaidRequest, opts: { what: string; readOnly?: boolean; direct?: boolean }): Promise<{ result: RaidResult; served: boolean }> {
  if (where.members && where.pool) throw new Error('give either a pool name or --members, not both');
  const bar = progressFor(opts.what);
  const client = await servedPool(where, cmd);
  const req = build(client !== undefined);
  let result: RaidResult | undefined;
  if (client) {
    try {
      const reply = await client.request(req, bar.update);
      if (!reply.status) throw new Error(`the server of pool '${client.pool}' answered without the array's status`);
      result = { ...reply, status: reply.status };
    } finally {
      client.close();
    }
  } else {
    const home = globals(cmd).home;
    const pool = where.pool;
    await withArray(
      home,
      membersOf(where, cmd),
      async (a) => {
        result = await runRaid(a, req, {
          home,
          rebuildRate: 0,
          direct: opts.direct ?? false,
          rebuildsAt: (_rate, fn) => fn(),
          ...(pool !== undefined && !where.members ? { record: (arr: RaidArray) => void recordMembers(new Registry(home), pool, arr), jobs: jobsFor(home, pool) } : {}),
          progress: bar.update,
        });
      },
      opts.readOnly ?? false,
      opts.direct ?? false,
    );
  }
  bar.done();
  for (const m of result!.messages) say(m);
  return { result: result!, served: client !== undefined };
}

/** What fail, remove, add, replace and rebuild print: a line on stderr, and with --json the array after the change on stdout. */
function changed(cmd: Command, line: string | undefined, { result, served }: { result: RaidResult; served: boolean }, pool: string | undefined): void {
  if (line) say(line);
  if (served && result.status.state === 'rebuilding') say(`rebuilding in the background (strata raid status ${pool}; strata raid rebuild ${pool} waits for it)`);
  if (globals(cmd).json) printJson({ ...(result.role !== undefined ? { role: result.role } : {}), ...(result.rebuilding !== undefined ? { rebuilding: result.rebuilding } : {}), status: result.status });
}

/** A member on the command line: for a pool, by the absolute path the array knows it by. */
function memberFor(where: Where, member: string): string {
  return where.pool && !where.members ? memberArg(member) : member;
}

/** A new member file: for a pool, absolute (the registry and a server know members so); with --members, as given. */
function newFile(where: Where, file: string): string {
  return where.members ? file : path.resolve(file);
}

const rate = (o: { rate?: number }): { rate?: number } => (o.rate !== undefined ? { rate: o.rate } : {});

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

  poolOption(raid.command('status').description('per-member state, degraded or not, rebuild progress, repair counters'))
    .argument('[pool]', 'the pool whose array to show (or give --members)')
    .action(async (pool: string | undefined, o: Where, cmd: Command) => {
      const { result } = await raidVerb(optionalPool(pool, o), cmd, () => ({ op: 'status' }), { what: 'status', readOnly: true });
      printStatus(result.status, globals(cmd).json);
    });

  rateOption(poolOption(raid.command('fail').description('mark a member faulty (refused if the array could not survive it); a hot spare takes over and is rebuilt')))
    .usage('[options] POOL MEMBER')
    .argument('<args...>', 'POOL MEMBER: the pool, then the member file or its role number')
    .action(async (args: string[], o: Where & { rate?: number }, cmd: Command) => {
      const { where, words } = named(o, args, ['MEMBER'], cmd);
      const member = words[0]!;
      // In-process the spare that takes the role is rebuilt now, as md would in the background; a server does it in the background.
      const done = await raidVerb(where, cmd, (served) => ({ op: 'fail', member: memberFor(where, member), ...rate(o), wait: !served }), { what: 'rebuilding' });
      changed(cmd, `${member} marked faulty`, done, where.pool);
    });

  poolOption(raid.command('remove').description('remove a faulty or missing member (or a spare)'))
    .usage('[options] POOL MEMBER')
    .argument('<args...>', 'POOL MEMBER: the pool, then the member file or its role number')
    .action(async (args: string[], o: Where, cmd: Command) => {
      const { where, words } = named(o, args, ['MEMBER'], cmd);
      const member = words[0]!;
      const done = await raidVerb(where, cmd, () => ({ op: 'remove', member: memberFor(where, member) }), { what: 'removing' });
      changed(cmd, `${member} removed`, done, where.pool);
    });

  waitOptions(rateOption(poolOption(raid.command('add').description('add a member: it fills a missing role and is rebuilt, or becomes a hot spare'))))
    .usage('[options] POOL FILE')
    .argument('<args...>', 'POOL FILE: the pool, then the new member file (created at member size if absent)')
    .action(async (args: string[], o: Where & { rate?: number; wait?: boolean }, cmd: Command) => {
      const { where, words } = named(o, args, ['FILE'], cmd);
      const file = words[0]!;
      const done = await raidVerb(where, cmd, (served) => ({ op: 'add', file: newFile(where, file), ...rate(o), wait: served ? o.wait === true : o.wait !== false }), { what: 'rebuilding' });
      const role = done.result.role;
      changed(cmd, role === 'spare' ? `${file} added as a hot spare` : `${file} takes member role ${String(role)}`, done, where.pool);
    });

  waitOptions(rateOption(poolOption(raid.command('replace').description('replace a member with a new file (hot: an active member serves until the new one is whole), then rebuild'))))
    .usage('[options] POOL OLD NEW')
    .argument('<args...>', 'POOL OLD NEW: the pool, the member to replace (file or role number), the new member file (created at member size if absent)')
    .action(async (args: string[], o: Where & { rate?: number; wait?: boolean }, cmd: Command) => {
      const { where, words } = named(o, args, ['OLD', 'NEW'], cmd);
      const [old, file] = [words[0]!, words[1]!];
      const done = await raidVerb(where, cmd, (served) => ({ op: 'replace', member: memberFor(where, old), file: newFile(where, file), ...rate(o), wait: served ? o.wait === true : o.wait !== false }), { what: 'rebuilding' });
      changed(cmd, `${file} takes member role ${String(done.result.role)}`, done, where.pool);
    });

  rateOption(poolOption(raid.command('rebuild').description('finish a rebuild in the foreground, from its checkpoint (of a served pool: wait for the server\'s)')))
    .argument('[pool]', 'the pool whose array to rebuild (or give --members)')
    .addOption(cacheOption('the members (of an array not being served)'))
    .action(async (pool: string | undefined, o: Where & { rate?: number; cache: CacheMode }, cmd: Command) => {
      const where = optionalPool(pool, o);
      const done = await raidVerb(where, cmd, () => ({ op: 'rebuild', ...rate(o) }), { what: 'rebuilding', direct: o.cache === 'none' });
      changed(cmd, done.result.rebuilding ? undefined : 'nothing to rebuild: every member is in sync', { ...done, served: false }, where.pool);
    });

  poolOption(raid.command('scrub').description('compare mirrors / parity over the whole array and report mismatches (on a degraded array: what redundancy remains)'))
    .argument('[pool]', 'the pool whose array to scrub (or give --members)')
    .option('--repair', 'make mismatching copies agree (RAID 6 locates a bad data block from P and Q; 3+ mirrors vote)')
    .addOption(cacheOption('the members (of an array not being served)'))
    .action(async (pool: string | undefined, o: Where & { repair?: boolean; cache: CacheMode }, cmd: Command) => {
      const { result } = await raidVerb(optionalPool(pool, o), cmd, () => ({ op: 'scrub', repair: o.repair ?? false }), { what: 'scrubbing', direct: o.cache === 'none' });
      printScrub(result.report!, globals(cmd).json);
    });
};

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
