import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { commandGroups } from '../../bin/commands/index.js';
import { commandWord, groupsFor, LAZY_GROUPS } from '../../bin/commands/lazy-groups.js';

/** A command's whole shape: names, aliases, arguments, options, help text, subcommands. */
function shape(c: Command): unknown {
  return {
    name: c.name(),
    aliases: c.aliases(),
    description: c.description(),
    args: c.registeredArguments.map((a) => [a.name(), a.required, a.variadic]),
    options: c.options.map((o) => [o.flags, o.description, o.defaultValue, o.argChoices]),
    help: c.helpInformation(),
    commands: c.commands.map(shape),
  };
}

function program(groups: readonly ((p: Command) => void)[]): Command {
  const p = new Command('strata');
  for (const g of groups) g(p);
  return p;
}

describe('command groups loaded alone', () => {
  const all = program(commandGroups);
  it.each(Object.keys(LAZY_GROUPS))("'%s' has the same commands, options and help as with every group loaded", async (word) => {
    const alone = program(await groupsFor(['node', 'strata', word]));
    const mine = alone.commands.find((c) => c.name() === word);
    const full = all.commands.find((c) => c.name() === word);
    expect(mine).toBeDefined();
    expect(shape(mine!)).toEqual(shape(full!));
  });

  it('a word of a group that others extend, or none, loads every group', async () => {
    for (const argv of [['pool', 'list'], ['raid', 'create'], ['--help'], [], ['help', 'import'], ['nosuch']]) expect(await groupsFor(['node', 'strata', ...argv])).toBe(commandGroups);
  });

  it('the word is found after the global options', () => {
    expect(commandWord(['node', 'strata', '--home', 'import', 'export', 'p/v', 'f'])).toBe('export');
    expect(commandWord(['node', 'strata', '--json', '--home=h', 'import', 'p/v'])).toBe('import');
    expect(commandWord(['node', 'strata', '-V'])).toBeNull();
    expect(commandWord(['node', 'strata', '--home'])).toBeNull();
  });
});
