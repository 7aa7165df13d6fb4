import type { CommandGroup } from './index.js';

/**
 * The command groups that own their top-level words outright (no other group
 * adds subcommands or options to them), each loaded on its own: `strata
 * import` then loads the transfer commands and what they use, not every
 * module of every command, which on a loaded host is a good part of a
 * second of a short import. Any other word (or none: --help) loads them all.
 */
export const LAZY_GROUPS: Readonly<Record<string, () => Promise<CommandGroup>>> = {
  import: async () => (await import('./transfer.js')).transferCommands,
  export: async () => (await import('./transfer.js')).transferCommands,
  volume: async () => (await import('./volume.js')).volumeCommands,
  map: async () => (await import('./map.js')).mapCommands,
  job: async () => (await import('./job.js')).jobCommands,
  serve: async () => (await import('./serve.js')).serveCommands,
  diff: async () => (await import('./diff.js')).diffCommands,
  'export-diff': async () => (await import('./diff.js')).diffCommands,
  'import-diff': async () => (await import('./diff.js')).diffCommands,
  snapshot: async () => (await import('./snapshot.js')).snapshotCommands,
  clone: async () => (await import('./clone.js')).cloneCommands,
  template: async () => (await import('./template.js')).templateCommands,
  send: async () => (await import('./send.js')).sendCommands,
  receive: async () => (await import('./send.js')).sendCommands,
  migrate: async () => (await import('./migrate.js')).migrateCommands,
};

/** The command word of a strata command line (`node strata [--home DIR] [--json] WORD …`), or null when there is none before an option Strata does not know. */
export function commandWord(argv: readonly string[]): string | null {
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--home') i++;
    else if (a === '--json' || a.startsWith('--home=')) continue;
    else return a.startsWith('-') ? null : a;
  }
  return null;
}

/** The groups a command line needs: its word's own group when it has one, else all. */
export async function groupsFor(argv: readonly string[]): Promise<CommandGroup[]> {
  const word = commandWord(argv);
  const lazy = word !== null && Object.hasOwn(LAZY_GROUPS, word) ? LAZY_GROUPS[word] : undefined;
  if (lazy) return [await lazy()];
  return (await import('./index.js')).commandGroups;
}
