import type { Command } from 'commander';
import { cloneCommands } from './clone.js';
import { diffCommands } from './diff.js';
import { jobCommands } from './job.js';
import { mapCommands } from './map.js';
import { migrateCommands } from './migrate.js';
import { poolCommands } from './pool.js';
import { poolAdminCommands } from './pool-admin.js';
import { raidCommands } from './raid.js';
import { sendCommands } from './send.js';
import { serveCommands } from './serve.js';
import { snapshotCommands } from './snapshot.js';
import { templateCommands } from './template.js';
import { transferCommands } from './transfer.js';
import { volumeCommands } from './volume.js';

/** Each command group registers its subcommands on the program; one file per group. */
export type CommandGroup = (program: Command) => void;

export const commandGroups: CommandGroup[] = [poolCommands, volumeCommands, mapCommands, transferCommands, raidCommands, poolAdminCommands, jobCommands, serveCommands, diffCommands, snapshotCommands, cloneCommands, templateCommands, sendCommands, migrateCommands];
