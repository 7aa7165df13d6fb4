import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = path.join(repo, 'dist/bin/strata.js');

/**
 * Compiles the CLI when its sources changed since the last build, so the tests
 * run what a user runs. Test files run in parallel and each calls this first:
 * a lock directory serializes them, and a stamp of the sources lets every file
 * after the first skip the build, so dist/ is never rewritten under a CLI
 * process another file started.
 */
export function buildCli(): void {
  const lock = path.join(os.tmpdir(), `strata-cli-build-${createHash('sha1').update(repo).digest('hex').slice(0, 16)}.lock`);
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A lock older than two minutes belongs to a build that died.
      // The holder may have let go between our mkdir and this stat: then try again at once.
      const held = fs.statSync(lock, { throwIfNoEntry: false });
      if (held === undefined) continue;
      if (Date.now() - held.mtimeMs > 120_000) fs.rmSync(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`waited too long for ${lock}`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
  try {
    const stampFile = path.join(repo, 'dist', '.cli-test-sources');
    const stamp = sourceStamp();
    const fresh = fs.existsSync(cli) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === stamp;
    if (!fresh) {
      execFileSync(process.execPath, [path.join(repo, 'node_modules/typescript/bin/tsc'), '-p', repo], { stdio: 'pipe' });
      fs.writeFileSync(stampFile, stamp);
    }
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

/** A digest of every compiled source's path, size and modification time. */
function sourceStamp(): string {
  const hash = createHash('sha1');
  for (const dir of ['src', 'bin', 'bench']) {
    const root = path.join(repo, dir);
    if (!fs.existsSync(root)) continue;
    const files = (fs.readdirSync(root, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).sort();
    for (const f of files) {
      const st = fs.statSync(path.join(root, f));
      hash.update(`${dir}/${f} ${st.size} ${st.mtimeMs}\n`);
    }
  }
  return hash.digest('hex');
}

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `strata --home HOME ...args` as a user would, with STRATA_HOME unset unless `env` sets it. */
export function strata(home: string | null, args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Run {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  if (opts.env?.STRATA_HOME === undefined) delete env.STRATA_HOME;
  const r = spawnSync(process.execPath, [cli, ...(home === null ? [] : ['--home', home]), ...args], {
    encoding: 'utf8',
    env,
    cwd: opts.cwd ?? repo,
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a command that must succeed quietly (nothing on stderr) and returns its stdout. */
export function ok(home: string | null, args: string[], opts?: { env?: Record<string, string>; cwd?: string }): string {
  const r = strata(home, args, opts);
  if (r.code !== 0 || r.stderr !== '') {
    throw new Error(`strata ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  return r.stdout;
}

/** Runs a command with --json that must succeed, and parses what it printed. */
export function json<T>(home: string, args: string[]): T {
  return JSON.parse(ok(home, ['--json', ...args])) as T;
}

/** A user error: exit 1 and exactly one line on stderr, no stack trace. */
export function fails(home: string | null, args: string[], opts?: { env?: Record<string, string>; cwd?: string }): string {
  const r = strata(home, args, opts);
  if (r.code !== 1) throw new Error(`strata ${args.join(' ')}: expected exit 1, got ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  if (lines.length !== 1 || !lines[0]!.startsWith('strata: ') || /\n\s+at /.test(r.stderr)) {
    throw new Error(`strata ${args.join(' ')}: expected one 'strata: …' line on stderr, got:\n${r.stderr}`);
  }
  return lines[0]!;
}

/** Bytes the host file system holds for a file (what `du` shows). */
export function allocated(file: string): number {
  return fs.statSync(file).blocks * 512;
}
