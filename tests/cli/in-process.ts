import { Command, CommanderError } from 'commander';
import { vi } from 'vitest';
import { commandGroups } from '../../bin/commands/index.js';
import { globals } from '../../bin/output.js';
import { raidCreateMessage } from '../../bin/raid-create-message.js';
import { checkHome } from '../../src/host/home.js';
import { setHostMessages } from '../../src/host/host-messages.js';

/** What one in-process run did, as a spawned CLI would report it. */
export interface InProcessRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `strata --home HOME ARGS…` inside the test process: the commands'
 * own code, real pools and files, without a Node start per call (a second
 * or more on a loaded machine). It ends as bin/strata.ts does: the same
 * home check before every command, host warnings and the final user error
 * on stderr (`strata: …`, or a JSON document with --json), exit 1 for a
 * user error or a command that set process.exitCode, 2 for a usage error.
 * process.exitCode is restored afterwards, so the test process keeps its own.
 * Tests that need the process itself (its real exit status, signals, its
 * memory, its start-up) spawn the built CLI instead.
 */
export async function inProcessRun(home: string, args: string[]): Promise<InProcessRun> {
  const program = new Command('strata')
    .option('--home <dir>')
    .option('--json')
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: () => undefined })
    .hook('preAction', (_program, action) => checkHome(globals(action).home));
  for (const register of commandGroups) register(program);
  let stdout = '';
  let stderr = '';
  const outSpy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((stdout += String(s)), true));
  const errSpy = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((stderr += String(s)), true));
  setHostMessages((m) => void (stderr += `strata: ${m}\n`));
  const savedExitCode = process.exitCode;
  process.exitCode = undefined;
  let code = 0;
  try {
    await program.parseAsync(['node', 'strata', '--home', home, ...args]);
    code = typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) code = err.exitCode === 0 ? 0 : 2;
    else {
      code = 1;
      const message = raidCreateMessage(err) ?? (err instanceof Error ? err.message : String(err));
      stderr += program.opts<{ json?: boolean }>().json === true ? `${JSON.stringify({ error: message })}\n` : `strata: ${message}\n`;
    }
  } finally {
    process.exitCode = savedExitCode;
    setHostMessages(() => undefined);
    errSpy.mockRestore();
    outSpy.mockRestore();
  }
  return { code, stdout, stderr };
}

/**
 * A command that must succeed quietly (exit 0, nothing on stderr): resolves
 * with its stdout. A user error rejects with its message, as the CLI prints
 * it after `strata: `; anything else rejects with all the run said.
 */
export async function inProcess(home: string, args: string[]): Promise<string> {
  const r = await inProcessRun(home, args);
  if (r.code === 0 && r.stderr === '') return r.stdout;
  const message = userError(r);
  throw new Error(message ?? `strata ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

/** The same, with --json, parsed. */
export async function inProcessJson<T>(home: string, args: string[]): Promise<T> {
  return JSON.parse(await inProcess(home, ['--json', ...args])) as T;
}

/**
 * The message of the user error the command ends with (it must end with
 * one: exit 1 and exactly one `strata: …` line on stderr), without `strata: `.
 */
export async function inProcessFails(home: string, args: string[]): Promise<string> {
  const r = await inProcessRun(home, args);
  const message = userError(r);
  if (message === undefined) throw new Error(`strata ${args.join(' ')}: expected exit 1 with one 'strata: …' line on stderr, got ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return message;
}

/** The one-line message of a run that ended with a user error, else undefined. */
function userError(r: InProcessRun): string | undefined {
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  if (r.code !== 1 || lines.length !== 1 || !lines[0]!.startsWith('strata: ')) return undefined;
  return lines[0]!.slice('strata: '.length);
}
