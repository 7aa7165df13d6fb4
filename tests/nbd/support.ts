import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import type { BlockDevice } from '../../src/blockdev/index.js';
import { NbdServer, StaticExportSource, type NbdServerOptions, type TlsSetup } from '../../src/nbd/index.js';

const run = promisify(execFile);
export const STRATA = path.resolve('dist/bin/strata.js');

/** Whether a real client is installed. In CI a missing tool fails the test instead of skipping it. */
export function hasTool(tool: string): boolean {
  const found = (process.env.PATH ?? '').split(':').some((dir) => fs.existsSync(path.join(dir, tool)));
  if (!found && process.env.CI === 'true') throw new Error(`${tool} is not installed (scripts/test-deps.sh installs it)`);
  return found;
}

/** Runs a real client; resolves with stdout, rejects with its stderr in the message. */
export async function tool(cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  try {
    const { stdout } = await run(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
}

/** An in-process server on a free loopback port serving the given devices by name. */
export async function serveDevices(
  exportsList: { name: string; device: BlockDevice; readOnly?: boolean; description?: string }[],
  opts: Partial<NbdServerOptions> & { tls?: TlsSetup } = {},
): Promise<{ server: NbdServer; port: number; uri: (name: string) => string; close: () => Promise<void> }> {
  const source = new StaticExportSource(
    exportsList.map((e) => ({
      name: e.name,
      ...(e.description === undefined ? {} : { description: e.description }),
      readOnly: e.readOnly ?? false,
      open: async () => e.device,
      release: async () => undefined,
    })),
  );
  const server = new NbdServer({ source, ...opts });
  const bound = await server.listen({ host: '127.0.0.1', port: 0 });
  const port = 'port' in bound ? bound.port : 0;
  return { server, port, uri: (name) => `nbd://127.0.0.1:${port}/${name}`, close: () => server.close() };
}

/** `strata serve …` as a child process, with the lines it printed once listening. */
export interface ServeProcess {
  child: ChildProcess;
  lines: string[];
  uri: string;
  stderr: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

export async function startServe(args: string[]): Promise<ServeProcess> {
  const child = spawn(process.execPath, [STRATA, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const lines: string[] = [];
  const rl = readline.createInterface({ input: child.stdout! });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    rl.on('line', (line) => {
      lines.push(line);
      if (line.startsWith('qemu-system-x86_64')) resolve();
    });
    void exited.then((code) => reject(new Error(`strata serve exited with ${code} before listening: ${err}`)));
  });
  return {
    child,
    lines,
    uri: lines[0]!,
    stderr: () => err,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** A raw TCP connection for speaking broken NBD at the server. */
export class RawPeer {
  private data = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;
  private readonly onData = (d: Buffer): void => {
    this.data = Buffer.concat([this.data, d]);
    this.wake();
  };

  private constructor(readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** With `halfOpen` the peer keeps its side open when the server ends its own, as a stubborn client would. */
  static async connect(port: number, halfOpen = false): Promise<RawPeer> {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: halfOpen });
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    return new RawPeer(s);
  }

  /** A peer over a socket connected elsewhere. */
  static wrap(socket: net.Socket): RawPeer {
    return new RawPeer(socket);
  }

  /** Stops reading, so the socket can be handed on (to TLS). */
  detach(): void {
    this.socket.off('data', this.onData);
    this.socket.pause();
  }

  send(...parts: Buffer[]): void {
    this.socket.write(Buffer.concat(parts));
  }

  /** Next n bytes, or throws if the server closes first. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.data.length < n) {
      if (this.closed) throw new Error(`connection closed with ${this.data.length} of ${n} bytes`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} bytes (have ${this.data.length})`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    const out = this.data.subarray(0, n);
    this.data = this.data.subarray(n);
    return out;
  }

  /** Resolves once the server has closed the connection. */
  async closedByServer(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('the server did not close the connection');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

export function expectBytesEqual(actual: Buffer, expected: Buffer, what: string): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  if (!actual.equals(expected)) {
    let i = 0;
    while (actual[i] === expected[i]) i++;
    expect.fail(`${what}: first difference at byte ${i}`);
  }
}

/** One job of fio's JSON output, the fields the tests read. */
export interface FioJob {
  jobname: string;
  error: number;
  write: { io_bytes: number };
  read: { io_bytes: number };
}

/** fio's nbd engine prints a line ahead of its JSON. */
export function parseFio(out: string): FioJob[] {
  return (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: FioJob[] }).jobs;
}

/** Writes, trims and zeroes a read-only export with libnbd's own checks off, then reads: one line per step. */
export const READ_ONLY_PROBE = `
import errno
for name, op in (("write", lambda: h.pwrite(b"x" * 4096, 0)), ("trim", lambda: h.trim(4096, 0)), ("zero", lambda: h.zero(4096, 0))):
    try:
        op()
        print(name, "accepted")
    except nbd.Error as e:
        print(name, "EPERM" if e.errnum == errno.EPERM else e.string)
data = h.pread(4096, 2 * 1024 * 1024)
print("read", len(data), data[0])
`;

/** nbdsh runs the system Python, where python3-libnbd puts its module (a PATH may lead to another Python first). */
export async function nbdsh(target: string, script: string): Promise<string> {
  const env = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };
  const { stdout } = await run('nbdsh', ['-c', 'h.set_strict_mode(0)', '-c', `h.connect_uri(${JSON.stringify(target)})`, '-c', script], { env, timeout: 60_000 });
  return stdout;
}
