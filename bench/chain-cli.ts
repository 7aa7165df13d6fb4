import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { strataCli } from './nbd-servers.js';

const run = promisify(execFile);

/** Runs `strata --home HOME ARGS…` (the built CLI) and gives its stdout and how long it took, start-up included. */
export async function strata(home: string, ...args: string[]): Promise<{ stdout: string; ms: number }> {
  const t0 = performance.now();
  try {
    const { stdout } = await run(process.execPath, [strataCli(), '--home', home, ...args], { maxBuffer: 16 * 1024 * 1024 });
    return { stdout, ms: performance.now() - t0 };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`strata ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`);
  }
}

/**
 * Whether the built CLI has `strata WORDS…` (e.g. `snapshot create`): the
 * online parts of the benchmark need the served pool's commands, which
 * arrive separately from the library's chain operations.
 */
export async function hasCommand(...words: string[]): Promise<boolean> {
  try {
    const { stdout } = await run(process.execPath, [strataCli(), ...words, '--help']);
    return stdout.includes(`Usage: strata ${words.join(' ')}`);
  } catch {
    return false;
  }
}
