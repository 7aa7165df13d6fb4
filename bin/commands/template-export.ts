import fs from 'node:fs';
import type { Command } from 'commander';
import { ControlClient } from '../../src/host/control-client.js';
import { ENDPOINT_OP, localTcp, type ServedEndpoint } from '../../src/host/served-endpoint.js';
import { jobsFor } from '../../src/host/jobs.js';
import { withPool } from '../../src/host/open-pool.js';
import { parseTemplateRef } from '../../src/host/snapshot-ref.js';
import { checkName } from '../../src/host/registry.js';
import { DEFAULT_LISTEN, parseHostPort } from '../host-port.js';
import { planExport, type ExportPackageKind, type TemplateSource } from '../../src/host/template-export.js';
import { writeTemplatePackage, type PackageWritten } from '../../src/host/template-package-write.js';
import { isDiskFormat } from '../../src/image/formats.js';
import type { DiskFormat } from '../../src/image/image-reader.js';
import { openFrozen, templateInfo } from '../../src/snapshot/index.js';
import type { TemplateInfo } from '../../src/snapshot/index.js';
import { interrupt } from '../interruptible.js';
import { JobProgressBar } from '../job-progress.js';
import { globals, report } from '../output.js';
import { connectServed } from '../served-transfer.js';
import { formatSize } from '../size.js';
import type { ExportOptions } from './template-package.js';

export const PACKAGE_KINDS: readonly ExportPackageKind[] = ['ova', 'ovf', 'xml'];
export const PACKAGE_DISK_FORMATS: readonly DiskFormat[] = ['vmdk', 'vhd', 'qcow2', 'raw'];

/** `strata template export POOL/TMPL DEST --package ova|ovf|xml [--disk-format F]`. */
export async function exportTemplatePackage(ref: string, dest: string, opts: ExportOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, template } = parseTemplateRef(ref);
  const kind = (opts.package ?? packageFor(dest)) as ExportPackageKind;
  if (!PACKAGE_KINDS.includes(kind)) throw new Error(`--package must be one of ${PACKAGE_KINDS.join(', ')} (got '${opts.package ?? ''}')`);
  const format = (opts.diskFormat ?? (kind === 'xml' ? 'qcow2' : 'vmdk')) as DiskFormat;
  if (!isDiskFormat(format) || !PACKAGE_DISK_FORMATS.includes(format)) throw new Error(`--disk-format must be one of ${PACKAGE_DISK_FORMATS.join(', ')} (got '${opts.diskFormat ?? ''}')`);
  // An OVA or OVF carries what VMware, VirtualBox and oVirt import: streamOptimized VMDK; elsewhere the sparse one qemu and others open directly.
  const subformat = format === 'vmdk' ? (kind === 'xml' ? 'monolithicSparse' : 'streamOptimized') : format === 'vhd' ? 'dynamic' : undefined;
  let nbd = parseHostPort('--nbd', opts.nbd ?? DEFAULT_LISTEN);
  const clone = checkName('volume', opts.clone ?? `${template}-vm`);
  const control = await ControlClient.connect(g.home, poolName);
  // A served pool's domain points at the server that serves it, not at a default port it may not listen on.
  if (control && kind === 'xml' && opts.nbd === undefined) nbd = (await servedTcp(control, template)) ?? nbd;
  const jobs = jobsFor(g.home, poolName);
  const spec = { kind: 'export' as const, target: `template ${ref} to ${dest}`, restart: `strata template export ${ref} ${dest} --package ${kind} --force`, signal: interrupt.signal };
  const written = await jobs.run(spec, async (job): Promise<PackageWritten> => {
    const run = async (source: TemplateSource): Promise<PackageWritten> => {
      const plan = await planExport(source, template);
      const total = plan.templates.reduce((a, t) => a + t.size, 0);
      const bar = new JobProgressBar(`export ${ref}`, total, job);
      try {
        return await writeTemplatePackage({ source, plan, kind, dest, format, subformat, force: opts.force === true, nbd, clone, pool: poolName, progress: (n) => bar.update(n), signal: job.signal });
      } finally {
        bar.finish();
      }
    };
    if (control) {
      try {
        return await run({
          info: async (name) => (await control.request({ op: 'template-info', template: name })).result as TemplateInfo,
          open: async (name) => (await connectServed(control, poolName, name, false)).device,
        });
      } finally {
        control.close();
      }
    }
    return withPool(g.home, poolName, { readOnly: true, direct: opts.cache === 'none' }, ({ pool }) =>
      run({
        info: (name) => templateInfo(pool, name),
        open: (name) => openFrozen(pool, { template: name }),
      }),
    );
  });
  const lines = written.disks.map((d) => `  ${d.file}: ${d.template}, ${formatSize(d.size)} as ${d.format}${d.subformat ? ` ${d.subformat}` : ''}, ${formatSize(d.fileSize)}`);
  // A served pool exports a new clone at once: only an unserved one needs the server started.
  const boot = written.clones
    ? [`  the domain boots ${written.clones.join(', ')} over NBD at ${nbd.host.includes(':') ? `[${nbd.host}]` : nbd.host}:${nbd.port}: ${written.clones.map((c, i) => `strata clone ${poolName}/${written.disks[i]!.template} ${c}`).join('; ')}; then ${control ? '' : `strata serve ${poolName} and `}virsh define ${dest}`]
    : [];
  report(g, { pool: poolName, template, package: kind, ...written }, [`exported template ${ref} to ${written.files[0] ?? dest} (${kind})`, ...lines, ...boot].join('\n'));
}

/** The TCP listener of the server that holds the pool, as this host reaches it (none: a server on a Unix socket only). */
async function servedTcp(control: ControlClient, template: string): Promise<{ host: string; port: number } | undefined> {
  try {
    return localTcp(((await control.request({ op: ENDPOINT_OP, volume: template })).result as ServedEndpoint).listen);
  } catch (err) {
    control.close();
    throw err;
  }
}

/** The package DEST asks for when --package is not given: DEST.xml a domain, a directory an OVF, anything else an OVA. */
function packageFor(dest: string): ExportPackageKind {
  if (/\.xml$/i.test(dest)) return 'xml';
  if (dest.endsWith('/') || (fs.existsSync(dest) && fs.statSync(dest).isDirectory())) return 'ovf';
  return 'ova';
}
