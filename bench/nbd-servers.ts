import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Starts the NBD servers that the guest test and the benchmark compare, all on
 * 127.0.0.1 over TCP so that the transport is the same for every server:
 * Strata on a pool volume (serveVolume) or on a plain file, and the reference
 * servers on files (startServer).
 */
export type ServerKind = 'strata' | 'qemu-nbd' | 'nbdkit';
/**
 * What runs: one of the servers compared, the benchmark's own bare Node
 * server (bench/nbd-bare.ts), or a RADOS device served without a pool
 * (bench/rados-raw-serve.ts).
 */
export type RunningKind = ServerKind | 'node-bare' | 'rados-raw';

export interface ServerOptions {
  /** Export name; the URI ends with it. */
  exportName?: string;
  /** Image format for qemu-nbd (strata and nbdkit serve the file as it is). */
  format?: 'raw' | 'qcow2';
  /** Extra command-line arguments placed before the image (tuning flags for the benchmark). */
  extraArgs?: string[];
  /** Milliseconds to wait for the server to accept connections. */
  readyTimeoutMs?: number;
}

export interface RunningServer {
  kind: RunningKind;
  uri: string;
  pid: number;
  /** Sends SIGTERM, waits for the exit (SIGKILL after a grace period) and tells how it ended. */
  stop(): Promise<ServerExit>;
}

export interface ServerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The server's stderr, for diagnosis. */
  stderr: string;
}

/** The checkout this file belongs to, whether it runs from bench/ (vitest) or dist/bench/ (node). */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the Strata checkout (no package.json above bench/)');
    dir = up;
  }
  return dir;
}

export function strataCli(): string {
  return path.join(repoRoot(), 'dist', 'bin', 'strata.js');
}

/** A Strata home with one pool holding one thin volume: what a user serves. */
export interface PoolVolume {
  home: string;
  pool: string;
  /** The volume's name, which is also its export name. */
  volume: string;
}

/**
 * Makes the pool (a sparse file of `poolBytes`, or what `poolArgs` such as
 * `--raid 5 --members …` make it) and the thin volume with the CLI, the
 * way a user would, so that the server meets a real pool.
 */
export function createPoolVolume(v: PoolVolume, volumeBytes: number, poolBytes: number, poolArgs: string[] = []): PoolVolume {
  const cli = (...args: string[]) =>
    execFileSync(process.execPath, [strataCli(), '--home', v.home, ...args], { stdio: 'pipe' });
  cli('pool', 'create', v.pool, '--size', String(poolBytes), ...poolArgs);
  cli('volume', 'create', `${v.pool}/${v.volume}`, String(volumeBytes));
  return v;
}

/** `strata serve POOL --export VOLUME`; the URI is the one it prints. */
export function serveVolume(v: PoolVolume, readyTimeoutMs = 15_000): Promise<RunningServer> {
  return startStrata(['--home', v.home, 'serve', v.pool, '--export', v.volume, '--listen', '127.0.0.1:0'], readyTimeoutMs);
}

/** `strata serve POOL` with every volume named in `exports` (all of them when empty), each by its own name. */
export function servePool(home: string, pool: string, exports: string[] = [], readyTimeoutMs = 15_000): Promise<RunningServer> {
  return startStrata(['--home', home, 'serve', pool, ...exports.flatMap((e) => ['--export', e]), '--listen', '127.0.0.1:0'], readyTimeoutMs);
}

/** The URI of another export of the same server: the printed one with its name replaced. */
export function exportUri(uri: string, exportName: string): string {
  const u = new URL(uri);
  return `nbd://${u.host}/${encodeURIComponent(exportName)}`;
}

/** `strata` is `strata serve --file IMAGE`: the protocol without the pool format. */
export async function startServer(kind: ServerKind, image: string, opts: ServerOptions = {}): Promise<RunningServer> {
  const exportName = opts.exportName ?? 'disk';
  const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
  const extra = opts.extraArgs ?? [];
  if (kind === 'strata') {
    return startStrata(['serve', '--file', image, '--listen', '127.0.0.1:0', '--export', exportName, ...extra], readyTimeoutMs);
  }
  // Another process may take the free port before the server binds it: try a few.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const args =
      kind === 'qemu-nbd'
        ? ['-f', opts.format ?? 'raw', '-t', '--bind', '127.0.0.1', '--port', String(port), '-x', exportName, ...extra, image]
        : ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), '-e', exportName, ...extra, 'file', image];
    const child = spawn(kind, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stderr = collect(child);
    try {
      await acceptsConnections(child, port, readyTimeoutMs, stderr);
      return running(kind, `nbd://127.0.0.1:${port}/${exportName}`, child, stderr);
    } catch (err) {
      if (attempt >= 3 || !/address already in use/i.test(stderr())) throw err;
    }
  }
}

/** The bare Node server of bench/nbd-bare.ts on a raw file: what Node and the kernel do without a storage format. */
export function startBareServer(image: string, exportName: string, readyTimeoutMs = 15_000): Promise<RunningServer> {
  const script = path.join(repoRoot(), 'dist', 'bench', 'nbd-bare-serve.js');
  return startNodeServer('node-bare', script, [image, '--export', exportName, '--listen', '127.0.0.1:0'], readyTimeoutMs);
}

/** A fresh RADOS device served by Strata's NBD server alone; `args` are bench/rados-raw-serve.ts's. */
export function startRadosRawServer(args: string[], readyTimeoutMs = 60_000): Promise<RunningServer> {
  const script = path.join(repoRoot(), 'dist', 'bench', 'rados-raw-serve.js');
  return startNodeServer('rados-raw', script, args, readyTimeoutMs);
}

function startStrata(args: string[], readyTimeoutMs: number): Promise<RunningServer> {
  return startNodeServer('strata', strataCli(), args, readyTimeoutMs);
}

async function startNodeServer(kind: RunningKind, script: string, args: string[], readyTimeoutMs: number): Promise<RunningServer> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr = collect(child);
  const uri = await announcedUri(child, kind, readyTimeoutMs);
  return running(kind, uri, child, stderr);
}

/** Every server started and not yet gone, for a caller that must not leave one behind (a test that timed out). */
const live = new Set<ChildProcess>();

export function killAllServers(): void {
  for (const child of live) child.kill('SIGKILL');
}

function running(kind: RunningKind, uri: string, child: ChildProcess, stderr: () => string): RunningServer {
  live.add(child);
  const exited = new Promise<ServerExit>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal, stderr: stderr() });
    });
  });
  return {
    kind,
    uri,
    pid: child.pid ?? -1,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

function collect(child: ChildProcess): () => string {
  let text = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    if (text.length < 64 * 1024) text += chunk.toString();
  });
  return () => text;
}

/** Strata (and the bare server) print `nbd://HOST:PORT/NAME` on stdout once they listen. */
function announcedUri(child: ChildProcess, kind: RunningKind, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const fail = (why: string) => {
      cleanup();
      child.kill('SIGKILL');
      reject(new Error(`${kind === 'strata' ? 'strata serve' : kind} ${why}; stdout: ${out.trim() || '(none)'}; stderr: ${err.trim() || '(none)'}`));
    };
    const timer = setTimeout(() => fail(`printed no nbd:// URI within ${timeoutMs} ms`), timeoutMs);
    const onOut = (chunk: Buffer) => {
      out += chunk.toString();
      const m = /^(nbd:\/\/\S+)$/m.exec(out);
      if (m) {
        cleanup();
        resolve(m[1]);
      }
    };
    const onErr = (chunk: Buffer) => {
      err += chunk.toString();
    };
    const onExit = (code: number | null, signal: string | null) => fail(`exited (code ${code}, signal ${signal}) before listening`);
    const onError = (e: Error) => fail(`could not start: ${e.message}`);
    function cleanup() {
      clearTimeout(timer);
      child.stdout?.off('data', onOut);
      child.stderr?.off('data', onErr);
      child.off('exit', onExit);
      child.off('error', onError);
    }
    child.stdout?.on('data', onOut);
    child.stderr?.on('data', onErr);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

/** A port the kernel just handed out; the tiny window before the server binds it is acceptable on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

async function acceptsConnections(child: ChildProcess, port: number, timeoutMs: number, stderr: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let spawnError: Error | undefined;
  child.once('error', (e) => (spawnError = e));
  for (;;) {
    if (spawnError) throw new Error(`could not start ${child.spawnfile}: ${spawnError.message}`);
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${child.spawnfile} exited (code ${child.exitCode}) before listening: ${stderr().trim()}`);
    }
    if (await canConnect(port)) return;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${child.spawnfile} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
