import type { Command } from 'commander';
import { adminOnPool } from '../../src/host/admin-client.js';
import { checkName, parseVolumeRef } from '../../src/host/registry.js';
import { onePool, parseTemplateRef } from '../../src/host/snapshot-ref.js';
import type { TemplateInfo } from '../../src/snapshot/index.js';
import { globals, printFields, printJson, printTable, report } from '../output.js';
import { formatSize } from '../size.js';
import { settingsLines } from '../template-settings-lines.js';
import type { CommandGroup } from './index.js';
import { templatePackageCommands } from './template-package.js';

/**
 * `strata template create|clone|info|delete|list`: read-only, protected
 * bases that clones are made from. A template shares its pool's name space
 * with volumes; one that clones depend on cannot be deleted.
 */
export const templateCommands: CommandGroup = (program) => {
  const template = program.command('template').description('make, copy, inspect and delete templates (read-only bases for clones)');

  template.command('create').description('turn a volume into a template: it becomes read-only and protected, and is no longer a volume').argument('<pool/vol>', 'the volume').action(createTemplate);
  template
    .command('clone')
    .description("a new template from a volume's current state (the volume stays) or from another template")
    .argument('<source>', 'POOL/VOL or POOL/TEMPLATE')
    .argument('<pool/new>', 'the new template, in the same pool')
    .action(cloneTemplate);
  template.command('info').description('one template: size, origin, what depends on it, the VM settings it was imported with').argument('<pool/template>', 'the template').action(templateInfo);
  template.command('delete').description('delete a template nothing is cloned from').argument('<pool/template>', 'the template').option('--force', "end the connections reading the template's export first").action(deleteTemplate);
  template.command('list').description("a pool's templates").argument('<pool>', 'the pool').action(listTemplates);
  templatePackageCommands(template);
};

async function createTemplate(ref: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume } = parseVolumeRef(ref);
  const t = await adminOnPool(g.home, poolName, { op: 'template-create', volume }, { readOnly: false });
  report(g, { pool: poolName, ...t }, `converted volume ${ref} into template ${poolName}/${t.name}: ${formatSize(t.size)}, read-only and protected`);
}

async function cloneTemplate(sourceText: string, target: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const src = parseVolumeRef(sourceText);
  const dst = parseTemplateRef(target);
  const poolName = onePool([src, dst], 'a template and its source');
  const t = await adminOnPool(g.home, poolName, { op: 'template-clone', source: src.volume, name: dst.template }, { readOnly: false });
  report(g, { pool: poolName, ...t }, `created template ${target} from ${sourceText}: ${formatSize(t.size)}`);
}

async function templateInfo(ref: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, template } = parseTemplateRef(ref);
  const t = await adminOnPool(g.home, poolName, { op: 'template-info', template }, { readOnly: true });
  if (g.json) return printJson({ pool: poolName, ...t });
  printFields([
    ['template', ref],
    ['uuid', t.uuid],
    ['size', `${formatSize(t.size)} (${t.size} bytes)`],
    ['allocated', `${formatSize(t.allocatedBytes)} (${t.allocatedBytes} bytes)`],
    ['created', t.created],
    ['origin', t.origin ?? '-'],
    ['dependants', t.dependants.length === 0 ? 'none' : t.dependants.join(', ')],
    ...settingsLines(t.settings),
  ]);
}

async function deleteTemplate(ref: string, opts: { force?: boolean }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, template } = parseTemplateRef(ref);
  const r = await adminOnPool(g.home, poolName, { op: 'template-delete', template, ...(opts.force === true ? { force: true } : {}) }, { readOnly: false });
  report(g, r, `deleted template ${ref}`);
}

async function listTemplates(poolName: string, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const all = await adminOnPool(g.home, checkName('pool', poolName), { op: 'template-list' }, { readOnly: true });
  all.sort((a, b) => a.name.localeCompare(b.name));
  if (g.json) return printJson(all.map((t): TemplateInfo & { pool: string } => ({ pool: poolName, ...t })));
  if (all.length === 0) return void process.stdout.write(`no templates in pool '${poolName}'\n`);
  printTable(all, [
    { header: 'NAME', value: (t) => t.name },
    { header: 'SIZE', value: (t) => formatSize(t.size), align: 'right' },
    { header: 'ALLOCATED', value: (t) => formatSize(t.allocatedBytes), align: 'right' },
    { header: 'CLONES', value: (t) => String(t.dependants.length), align: 'right' },
    { header: 'ORIGIN', value: (t) => t.origin ?? '-' },
    { header: 'CREATED', value: (t) => t.created.replace('T', ' ').slice(0, 19) },
  ]);
}
