/**
 * Memory of `strata serve` under clients that pipeline large READs and never
 * read the replies: RSS of the server process before, at its peak while they
 * sit there, and after they disconnect. A measurement, not a test.
 *
 *   node dist/bench/nbd-slow-readers.js [--clients 20,50] [--requests 100] [--settle 5] [-- serve args…]
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';
import { CMD_READ, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, IHAVEOPT, OPT_EXPORT_NAME, REQUEST_MAGIC } from '../src/nbd/constants.js';
import { strataCli } from './nbd-servers.js';

const MIB = 1024 * 1024;

interface Args {
  clients: number[];
  requests: number;
  settleSeconds: number;
  serveArgs: string[];
}

function parseArgs(argv: string[]): Args {
  const args: Args = { clients: [20, 50], requests: 100, settleSeconds: 5, serveArgs: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      args.serveArgs = argv.slice(i + 1);
      break;
    }
    const v = argv[++i];
    if (v === undefined) throw new Error(`${a} needs a value`);
    if (a === '--clients') args.clients = v.split(',').map(Number);
    else if (a === '--requests') args.requests = Number(v);
    else if (a === '--settle') args.settleSeconds = Number(v);
    else throw new Error(`unknown option ${a}`);
  }
  return args;
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Fixed newstyle, NBD_OPT_EXPORT_NAME, then `requests` 1 MiB READs; the replies are never read. Undefined if the server turned it away. */
async function slowReader(port: number, exportName: string, requests: number): Promise<net.Socket | undefined> {
  const s = net.connect({ port, host: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  s.on('error', () => undefined);
  let got = Buffer.alloc(0);
  const negotiated = await new Promise<boolean>((resolve) => {
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      if (got.length >= 18 + 10) {
        s.off('data', onData);
        resolve(true);
      } else if (got.length >= 18 && got.length - d.length < 18) sendOptions();
    };
    const sendOptions = (): void => {
      const flags = Buffer.alloc(4);
      flags.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
      const name = Buffer.from(exportName);
      const opt = Buffer.alloc(16);
      opt.writeBigUInt64BE(IHAVEOPT, 0);
      opt.writeUInt32BE(OPT_EXPORT_NAME, 8);
      opt.writeUInt32BE(name.length, 12);
      s.write(Buffer.concat([flags, opt, name]));
    };
    s.on('data', onData);
    s.once('close', () => resolve(false));
  });
  if (!negotiated) return undefined;
  s.pause();
  const batch = Buffer.alloc(28 * requests);
  for (let i = 0; i < requests; i++) {
    const at = 28 * i;
    batch.writeUInt32BE(REQUEST_MAGIC, at);
    batch.writeUInt16BE(0, at + 4);
    batch.writeUInt16BE(CMD_READ, at + 6);
    batch.writeUInt32BE(i, at + 12);
    batch.writeUInt32BE((i % 64) * MIB, at + 20);
    batch.writeUInt32BE(MIB, at + 24);
  }
  s.write(batch);
  return s;
}

interface Round {
  before: number;
  peak: number;
  after: number;
  /** The server's accounted bytes while the clients sat there (its stats, via SIGUSR1); undefined if it printed none. */
  accounted: number | undefined;
  /** Clients the server took (the per-address cap may refuse some). */
  served: number;
}

async function round(clients: number, args: Args): Promise<Round> {
  const child = spawn(process.execPath, [strataCli(), 'serve', '--memory', '64M', '--listen', '127.0.0.1:0', ...args.serveArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const uri = await new Promise<string>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`strata serve exited with ${code}: ${stderr}`)));
  });
  const m = /:(\d+)\/(.*)$/.exec(uri)!;
  const pid = child.pid!;
  try {
    await sleep(500);
    const before = rssOf(pid);
    const sockets: net.Socket[] = [];
    for (let i = 0; i < clients; i++) {
      const s = await slowReader(Number(m[1]), m[2]!, args.requests);
      if (s) sockets.push(s);
    }
    let peak = before;
    for (let t = 0; t < 30; t++) {
      await sleep(100);
      peak = Math.max(peak, rssOf(pid));
    }
    const accounted = await budgetUsed(child, () => stderr);
    for (const s of sockets) s.destroy();
    await sleep(args.settleSeconds * 1000);
    return { before, peak, after: rssOf(pid), accounted, served: sockets.length };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}

async function budgetUsed(child: ReturnType<typeof spawn>, stderr: () => string): Promise<number | undefined> {
  const from = stderr().length;
  child.kill('SIGUSR1');
  for (let i = 0; i < 20; i++) {
    await sleep(50);
    const line = stderr().slice(from).split('\n').find((l) => l.startsWith('{"stats"'));
    if (line) return (JSON.parse(line) as { stats: { budget: { used: number } } }).stats.budget.used;
  }
  return undefined;
}

const args = parseArgs(process.argv.slice(2));
const mib = (n: number): string => `${(n / MIB).toFixed(0)}M`;
console.log(`| slow clients (served) | requests each | RSS before | RSS peak | accounted at peak | RSS ${args.settleSeconds} s after they close |`);
console.log('|---|---|---|---|---|---|');
for (const n of args.clients) {
  const r = await round(n, args);
  console.log(`| ${n} (${r.served}) | ${args.requests} × 1 MiB | ${mib(r.before)} | ${mib(r.peak)} | ${r.accounted === undefined ? 'n/a' : mib(r.accounted)} | ${mib(r.after)} |`);
}
