import { Option, type Command } from 'commander';
import { ControlClient } from '../../src/host/control-client.js';
import { jobsFor } from '../../src/host/jobs.js';
import { withPool } from '../../src/host/open-pool.js';
import { checkName, Registry } from '../../src/host/registry.js';
import { importTemplate, nameFromVm, type TemplateImportResult } from '../../src/host/template-import.js';
import { openTemplateSource } from '../../src/host/template-source.js';
import { poolTarget, servedTarget } from '../../src/host/template-targets.js';
import { cacheOption, type CacheMode } from '../cache-option.js';
import { interrupt, interruptible } from '../interruptible.js';
import { JobProgressBar } from '../job-progress.js';
import { globals, report } from '../output.js';
import { connectServed } from '../served-transfer.js';
import { formatSize } from '../size.js';
import { exportTemplatePackage, PACKAGE_DISK_FORMATS, PACKAGE_KINDS } from './template-export.js';

/** `strata template import|export`: templates in and out as OVF, OVA and libvirt XML packages. */
export function templatePackageCommands(template: Command): void {
  template
    .command('import')
    .description('import an OVA, an OVF (a directory or its .ovf) or a libvirt domain XML with its disks, from a path or an http(s):// URL, as templates keeping its VM settings')
    .argument('<source>', 'FILE.ova, DIR, FILE.ovf, FILE.xml, or an http:// or https:// URL of one')
    .argument('[pool/name]', 'POOL/NAME, or POOL (NAME from the VM name); default: the only pool, the VM name')
    .option('--stall-timeout <seconds>', 'fail a download that sends nothing for this long', '60')
    .option('--allow-outside', "xml: read disk files outside the descriptor's folder (absolute paths as virsh dumpxml writes them)")
    .addOption(cacheOption("the pool's files"))
    .action((source: string, target: string | undefined, opts: ImportOptions, cmd: Command) => interruptible(() => importPackage(source, target, opts, cmd)));
  template
    .command('export')
    .description("write a template (and the templates of its other disks) as an OVA, an OVF directory or a libvirt domain XML with its disks, its VM settings written back")
    .argument('<pool/template>', 'the template (the first disk of an imported package)')
    .argument('<dest>', 'FILE.ova; a directory for ovf; FILE.xml (disks beside it) for xml')
    .addOption(new Option('--package <kind>', 'the package (default: xml for DEST.xml, ovf for a directory, else ova)').choices(PACKAGE_KINDS))
    .addOption(new Option('--disk-format <format>', 'the format of its disks (default: vmdk, streamOptimized in an OVA or OVF; qcow2 for xml)').choices(PACKAGE_DISK_FORMATS))
    .option('--nbd <host:port>', "xml: where the domain's disks are served (strata serve --listen; default: the listener of the server holding the pool, else 127.0.0.1:10809)")
    .option('--clone <name>', 'xml: the linked clone the domain boots, NAME-disk2 … for more disks (default TEMPLATE-vm)')
    .option('--force', 'overwrite DEST if it exists')
    .addOption(cacheOption("the pool's files"))
    .action((ref: string, dest: string, opts: ExportOptions, cmd: Command) => interruptible(() => exportTemplatePackage(ref, dest, opts, cmd)));
}

interface ImportOptions {
  stallTimeout: string;
  allowOutside?: boolean;
  cache: CacheMode;
}

export interface ExportOptions {
  package?: string;
  diskFormat?: string;
  nbd?: string;
  clone?: string;
  force?: boolean;
  cache: CacheMode;
}

/** POOL/NAME, POOL, or nothing: the pool named or the home's only one, and the name when given. */
export function importTarget(home: string, target: string | undefined): { pool: string; name: string | undefined } {
  if (target !== undefined) {
    if (target.includes('@')) throw new Error(`'${target}' names a snapshot; template import takes POOL/NAME`);
    const parts = target.split('/');
    if (parts.length > 2) throw new Error(`invalid template '${target}' (expected POOL/NAME, e.g. pool0/ubuntu)`);
    return { pool: checkName('pool', parts[0]!), name: parts[1] === undefined || parts[1] === '' ? undefined : checkName('template', parts[1]) };
  }
  const pools = new Registry(home).names();
  if (pools.length === 1) return { pool: pools[0]!, name: undefined };
  if (pools.length === 0) throw new Error(`no pools in ${home}: create one first (strata pool create POOL)`);
  throw new Error(`${home} has ${pools.length} pools (${pools.join(', ')}): say which, as POOL/NAME or POOL`);
}

async function importPackage(source: string, target: string | undefined, opts: ImportOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const stall = Number(opts.stallTimeout);
  if (!Number.isFinite(stall) || stall <= 0) throw new Error(`--stall-timeout must be a number of seconds above 0 (got '${opts.stallTimeout}')`);
  const where = importTarget(g.home, target);
  const pkg = await openTemplateSource(source, { stallMs: stall * 1000, signal: interrupt.signal, allowOutside: opts.allowOutside === true });
  try {
    const name = where.name ?? nameFromVm(pkg.vmName);
    const ref = `${where.pool}/${name}`;
    // A libvirt domain declares no capacities: its images say them as they come, and the bar reads what is known.
    const total = pkg.capacities.reduce<number>((a, b) => a + (b ?? 0), 0);
    const control = await ControlClient.connect(g.home, where.pool);
    const jobs = jobsFor(g.home, where.pool);
    const spec = { kind: 'import' as const, target: `template ${ref} from ${source}`, total, restart: `strata template import ${source} ${ref}`, signal: interrupt.signal };
    const result = await jobs.run(spec, async (job): Promise<TemplateImportResult> => {
      const bar = new JobProgressBar(`import ${ref}`, total, job);
      try {
        if (control) return await importTemplate(pkg, servedTarget(control, async (v) => (await connectServed(control, where.pool, v, true)).device), name, bar, job.signal);
        return await withPool(g.home, where.pool, { readOnly: false, direct: opts.cache === 'none' }, ({ pool }) => importTemplate(pkg, poolTarget(pool, { poolName: where.pool, jobs }), name, bar, job.signal));
      } finally {
        bar.finish();
        control?.close();
      }
    });
    const lines = result.disks.map((d) => `  ${where.pool}/${d.template}: ${formatSize(d.size)} from ${d.file} (${d.format}${d.subformat ? ` ${d.subformat}` : ''}), ${formatSize(d.dataBytes)} of data`);
    report(g, { pool: where.pool, source, templates: result.templates, disks: result.disks }, [`imported ${source} as template${result.templates.length === 1 ? '' : 's'} ${result.templates.map((t) => `${where.pool}/${t.name}`).join(', ')}`, ...lines].join('\n'));
  } finally {
    await pkg.close();
  }
}
