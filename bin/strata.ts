#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import type { CommandGroup } from './commands/index.js';
import { groupsFor } from './commands/lazy-groups.js';
import { checkHome } from '../src/host/home.js';
import { setHostMessages } from '../src/host/host-messages.js';
import { globals } from './output.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

export function buildProgram(groups: readonly CommandGroup[]): Command {
  const program = new Command('strata')
    .description('Thin virtual disks, snapshots, clones and software RAID, exported over NBD')
    .version(pkg.version, '-V, --version')
    .option('--home <dir>', 'where pools are registered (env STRATA_HOME)', process.env.STRATA_HOME ?? './strata-data')
    .option('--json', 'machine-readable output')
    .showHelpAfterError()
    .exitOverride()
    // Every command meets the home first, so a home that is a file or unreadable is one line for all of them.
    .hook('preAction', (_program, action) => checkHome(globals(action).home));
  for (const register of groups) register(program);
  return program;
}

async function main(argv: string[]): Promise<number> {
  setHostMessages((m) => void process.stderr.write(`strata: ${m}\n`));
  const program = buildProgram(await groupsFor(argv));
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version end through here too, with exit code 0.
      return err.exitCode === 0 ? 0 : 2;
    }
    // Loaded here: only a failed command needs it, and it brings the RAID modules.
    const { raidCreateMessage } = await import('./raid-create-message.js');
    const message = raidCreateMessage(err) ?? (err instanceof Error ? err.message : String(err));
    // With --json, errors are JSON too: scripts read one document from stderr, with the same exit status.
    if (program.opts<{ json?: boolean }>().json === true) process.stderr.write(`${JSON.stringify({ error: message })}\n`);
    else process.stderr.write(`strata: ${message}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv);
