import type { Command } from 'commander';

/** Each command group registers its subcommands on the program; one file per group. */
export type CommandGroup = (program: Command) => void;

export const commandGroups: CommandGroup[] = [];
