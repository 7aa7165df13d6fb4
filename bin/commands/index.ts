import type { Command } from 'commander';
import { registerRaid } from './raid.js';

/** Each command group registers its subcommands on the program; one file per group. */
export type CommandGroup = (program: Command) => void;

export const commandGroups: CommandGroup[] = [registerRaid];
