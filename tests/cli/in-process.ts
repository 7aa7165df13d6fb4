import { Command } from 'commander';
import { vi } from 'vitest';
import { commandGroups } from '../../bin/commands/index.js';

/**
 * Runs `strata --home HOME ARGS…` inside the test process: the commands'
 * own code, real pools and files, without a Node start per call (a second
 * or more on a loaded machine). Resolves with what it printed on stdout;
 * a user error rejects with its message, as the CLI would print it after
 * `strata: `. Tests that need the process itself (exit codes, one line on
 * stderr, its memory) spawn the built CLI instead.
 */
export async function inProcess(home: string, args: string[]): Promise<string> {
  const program = new Command('strata').option('--home <dir>').option('--json').exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  for (const register of commandGroups) register(program);
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  try {
    await program.parseAsync(['node', 'strata', '--home', home, ...args]);
  } finally {
    spy.mockRestore();
  }
  return out;
}

/** The same, with --json, parsed. */
export async function inProcessJson<T>(home: string, args: string[]): Promise<T> {
  return JSON.parse(await inProcess(home, ['--json', ...args])) as T;
}

/** The message of the user error the command ends with (it must end with one). */
export async function inProcessFails(home: string, args: string[]): Promise<string> {
  try {
    await inProcess(home, args);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  throw new Error(`strata ${args.join(' ')} succeeded; a refusal was expected`);
}
