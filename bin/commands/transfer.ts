import fs from 'node:fs';
import { Option, type Command } from 'commander';
import { tryLock } from 'fs-native-extensions';
import type { BlockDevice } from '../../src/blockdev/index.js';
import type { Mappable } from '../../src/host/volume-runs.js';
import { PoolError, type Pool, type VolumeHandle } from '../../src/qcowlike/index.js';
import { jobsFor } from '../../src/host/jobs.js';
import { cacheOption, type CacheMode } from '../cache-option.js';
import { JobProgressBar } from '../job-progress.js';
import { isFileTooLarge, tooLargeMessage } from '../../src/host/file-size-limit.js';
import { openImageSource, systemReason, type ImageSource } from '../../src/host/image-source.js';
import { IncompleteVolumeError } from '../incomplete.js';
import { mergeRanges, type Range } from '../../src/host/salvage-read.js';
import { aboutVolume, findVolume, withPool } from '../../src/host/open-pool.js';
import { globals, ProgressBar, report } from '../output.js';
import { parseVolumeRef, Registry } from '../../src/host/registry.js';
import { formatSize, parseSize } from '../size.js';
import type { CommandGroup } from './index.js';
import { CHUNK, copyFromVolume, copyIntoVolume, copyStreamIntoVolume, copyToStream } from '../../src/host/image-copy.js';
import { ControlClient } from '../../src/host/control-client.js';
import type { NbdDevice } from '../../src/nbd/index.js';
import { connectServed, servedInfo, servedNames, servedVolume, sizeCheck, writeServed } from '../served-transfer.js';
import { catalogNames, exportedFields, layerExportName, parseExportRef, resolveExportRef, type ExportedLayer, type ExportRef } from '../../src/host/export-ref.js';
import { openFrozen } from '../../src/snapshot/index.js';
import { interrupt, interruptible } from '../interruptible.js';
import { exportNative, formatFromName, formatOption, holdsData, importNative, subformatOption, type NativeExportResult, type NativeImportResult } from '../native-transfer.js';
import { DISK_FORMATS, isDiskFormat } from '../../src/image/formats.js';
import { formatName, HEAD_BYTES, type ImageFormat } from '../../src/image/detect.js';
import { ImageFormatError } from '../../src/image/errors.js';
import type { DiskFormat } from '../../src/image/image-reader.js';

export const transferCommands: CommandGroup = (program) => {
  program
    .command('import <pool/vol> <file>')
    .description('copy an image (FILE, or - for stdin) into a volume, creating it at the image\'s virtual size if it does not exist; zero runs are not written; a backing chain comes in as snapshots')
    .addOption(new Option('--format <format>', 'the image format (default: from the magic of FILE; a pipe is raw unless given)').choices(DISK_FORMATS))
    .option('--flatten', "write a backing chain's images into the volume alone, without snapshots of the images below")
    .option('--size <size>', "size of the volume to create (default: the image's virtual size; needed for a raw pipe)")
    .option('--force', 'overwrite an existing volume that holds data')
    .addOption(cacheOption("the pool's files"))
    .action((ref: string, file: string, opts: ImportOptions, cmd: Command) => interruptible(() => importImage(ref, file, opts, cmd)));
  program
    .command('export <pool/name> <file>')
    .description('copy a volume, a snapshot (POOL/VOL@SNAP) or a template into a sparse image (or to stdout with -); holes and zero runs stay holes')
    .addOption(new Option('--format <format>', "the image format (default: from FILE's extension, else raw)").choices(DISK_FORMATS))
    .option('--subformat <name>', 'vmdk: monolithicSparse (default) or streamOptimized; vhd: dynamic (default) or fixed')
    .option('--force', 'overwrite FILE if it exists')
    .option('--allow-incomplete', 'export a volume whose import did not finish (what it holds is partial)')
    .option('--salvage', 'write what verifies; zero-fill and report what does not (as qemu-img convert --salvage; raw only)')
    .addOption(cacheOption("the pool's files"))
    .action((ref: string, file: string, opts: ExportOptions, cmd: Command) => interruptible(() => exportImage(ref, file, opts, cmd)));
};

interface ImportOptions {
  format?: string;
  flatten?: boolean;
  size?: string;
  force?: boolean;
  cache: CacheMode;
}

async function importImage(ref: string, fileArg: string, opts: ImportOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume: name } = parseVolumeRef(ref);
  const wanted = opts.size === undefined ? undefined : parseSize(opts.size);
  const format = formatOption(opts.format);
  if (format !== undefined && format !== 'raw') return importFormatted(ref, fileArg, format, wanted, opts, cmd);
  const source = openImageSource(fileArg, CHUNK);
  const file = source.file;
  if (source.format !== null && format === undefined) {
    source.close();
    const found = source.format;
    const convert = `(convert it first: qemu-img convert -O raw ${fileArg === '-' ? 'IMAGE' : fileArg} OUT.raw)`;
    if (!isDiskFormat(found)) throw new Error(`${file} is a ${formatName(found)} image, which Strata cannot read ${convert}`);
    if (source.size === null) throw new Error(`${file} is a ${formatName(found)} image: give --format ${found} to import it from a pipe`);
    return importFormatted(ref, fileArg, found, wanted, opts, cmd);
  }
  try {
    const control = await ControlClient.connect(g.home, poolName);
    const spec = { kind: 'import' as const, target: `${ref} from ${file}`, total: source.size ?? 0, restart: `strata import ${ref} ${fileArg} (an incomplete volume is created anew)`, signal: interrupt.signal };
    const result = await jobsFor(g.home, poolName).run(spec, async (job) => {
      const bar = (total: number): ProgressBar => new JobProgressBar(`import ${ref}`, total, job);
      return control ? importServed(control, { poolName, name, ref, source, wanted, opts, bar }) : withPool(g.home, poolName, { readOnly: false, direct: opts.cache === 'none' }, async ({ pool }) => {
      const existing = await pool.volumeInfo(name).catch((err: unknown) => {
        if (err instanceof PoolError && err.code === 'ENOENT') return null;
        throw err;
      });
      // An import that was cut short (killed, or a crash) left its volume marked incomplete: this one starts it over.
      const redo = existing?.incomplete === true;
      const exists = existing !== null && !redo;
      const fileSize = source.size;
      if (existing && exists) {
        const size = existing.size;
        if (wanted !== undefined && wanted !== size) throw new Error(`volume ${ref} exists with size ${formatSize(size)}; --size ${opts.size} only applies when import creates it`);
        if (fileSize !== null && size < fileSize) throw new Error(`${file} (${formatSize(fileSize)}) does not fit in ${ref} (${formatSize(size)})`);
        // As export over an existing file: what the volume holds is not overwritten unless asked.
        if (opts.force !== true && (await holdsData(pool, name))) throw new Error(`volume ${ref} holds data; use --force to overwrite it`);
      } else {
        if (fileSize === null && wanted === undefined) throw new Error(`${file} is a pipe, whose size is not known: give --size to create ${ref}`);
        const size = wanted ?? fileSize ?? 0;
        if (size === 0) throw new Error(`${file} is empty: give --size to create ${ref}`);
        if (fileSize !== null && size < fileSize) throw new Error(`--size ${opts.size} is smaller than ${file} (${formatSize(fileSize)})`);
        // Thrown away whole rather than overwritten, so the result is exactly what a first import gives (thin, new size).
        if (redo) await pool.deleteVolume(name);
        // Marked incomplete until the copy is durable, so that a SIGKILL or a power loss midway cannot leave what looks like a good volume.
        await pool.createVolume(name, size, { incomplete: true });
      }
      const volume = await pool.openVolume(name);
      let copied: { bytesWritten: number; zeroBytes: number; bytesRead: number };
      try {
        // A new volume reads zeroes everywhere already; an existing one must have its zero runs zeroed.
        copied =
          fileSize === null
            ? await copyStreamIntoVolume(source, volume, ref, !exists, bar(volume.size), interrupt.signal)
            : { ...(await copyIntoVolume({ fd: source.fd, file, size: fileSize }, volume, !exists, bar(fileSize), interrupt.signal)), bytesRead: fileSize };
        // For a volume this import created, one commit makes the data durable and clears the mark.
        if (exists) await volume.flush();
        else await pool.completeVolume(name);
      } catch (err) {
        await volume.close().catch(() => undefined);
        // A volume this import created holds only part of the image: remove it so a retry starts clean
        // (if that fails too, it stays marked incomplete, and the next import of it starts over).
        if (!exists) await pool.deleteVolume(name).catch(() => undefined);
        throw err;
      }
      const volumeSize = volume.size;
      await volume.close();
      return { ...copied, created: !exists, replacedIncomplete: redo, volumeSize };
      });
    });
    const { bytesRead, ...rest } = result;
    // format and subformat as a native import and every export report them, so a script reads one shape.
    const json = { pool: poolName, volume: name, file, format: 'raw', subformat: null, fileSize: bytesRead, ...rest };
    const how = result.replacedIncomplete ? ` (created anew over an incomplete import, ${formatSize(result.volumeSize)})` : result.created ? ` (created, ${formatSize(result.volumeSize)})` : '';
    report(g, json, `imported ${file} into ${ref}${how}: ${formatSize(bytesRead)} read, ${formatSize(result.bytesWritten)} written, ${formatSize(result.zeroBytes)} of zeroes not written`);
  } finally {
    source.close();
  }
}

/** An image in a format other than raw, decoded natively (raw images keep the copy loop above). */
async function importFormatted(ref: string, fileArg: string, format: DiskFormat, wanted: number | undefined, opts: ImportOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume: name } = parseVolumeRef(ref);
  const control = await ControlClient.connect(g.home, poolName);
  let r: NativeImportResult;
  try {
    r = await importNative({ home: g.home, poolName, name, ref, fileArg, format, flatten: opts.flatten === true, wanted, sizeText: opts.size, force: opts.force === true, direct: opts.cache === 'none', control: control ?? null });
  } catch (err) {
    throw wrongFormat(err, fileArg, format);
  } finally {
    // An image refused before any served write (a wrong --format, a missing backing file) must not leave the socket holding the process open.
    control?.close();
  }
  const how = r.replacedIncomplete ? ` (created anew over an incomplete import, ${formatSize(r.volumeSize)})` : r.created ? ` (created, ${formatSize(r.volumeSize)})` : '';
  const kind = r.subformat === null ? r.format : `${r.format} ${r.subformat}`;
  const chain = r.backing.length === 0 ? '' : r.flattened ? `, ${r.backing.length} backing file${r.backing.length === 1 ? '' : 's'} flattened in` : `, snapshots ${r.snapshots.map((s) => `${ref}@${s}`).join(', ')} for its backing files`;
  const { dataBytes, zeroBytes, ...rest } = r;
  const json = { pool: poolName, volume: name, ...rest, bytesWritten: dataBytes, zeroBytes };
  if (!g.json) for (const note of r.notes) process.stderr.write(`strata: note: ${note}\n`);
  report(g, json, `imported ${r.file} (${kind}) into ${ref}${how}${chain}: ${formatSize(r.fileSize)} read, ${formatSize(dataBytes)} written, ${formatSize(zeroBytes)} of zeroes not written`);
}

/** A file that is not of the --format given says what its magic shows, as qemu-img users expect to be told. */
function wrongFormat(err: unknown, fileArg: string, format: DiskFormat): unknown {
  if (!(err instanceof ImageFormatError) || fileArg === '-') return err;
  let found: ImageFormat | null = null;
  try {
    const probe = openImageSource(fileArg, HEAD_BYTES);
    found = probe.format;
    probe.close();
  } catch {
    return err;
  }
  if (found === null || found === format) return err;
  return new Error(`${err.message} (the file is a ${formatName(found)} image: leave --format out, or give --format ${found})`);
}

interface ImportCopy {
  bytesWritten: number;
  zeroBytes: number;
  bytesRead: number;
  created: boolean;
  replacedIncomplete: boolean;
  volumeSize: number;
}

/**
 * Import into a served pool: the same checks and the same copy as in-process,
 * with the volume made (or removed) over the control socket and written over
 * its NBD export. A volume created here is not marked incomplete (the server
 * would not export it): if this process is killed midway, the volume holds
 * part of the image and must be imported again or deleted.
 */
async function importServed(control: ControlClient, a: { poolName: string; name: string; ref: string; source: ImageSource; wanted: number | undefined; opts: ImportOptions; bar: (total: number) => ProgressBar }): Promise<ImportCopy> {
  const { poolName, name, ref, source, wanted, opts, bar } = a;
  const file = source.file;
  const fileSize = source.size;
  try {
    const existing = await servedVolume(control, name);
    const redo = existing?.incomplete === true;
    const exists = existing !== null && !redo;
    if (existing && exists) sizeCheck(existing, ref, file, fileSize, wanted, opts.size);
    else {
      if (fileSize === null && wanted === undefined) throw new Error(`${file} is a pipe, whose size is not known: give --size to create ${ref}`);
      const size = wanted ?? fileSize ?? 0;
      if (size === 0) throw new Error(`${file} is empty: give --size to create ${ref}`);
      if (fileSize !== null && size < fileSize) throw new Error(`--size ${opts.size} is smaller than ${file} (${formatSize(fileSize)})`);
      if (redo) await control.request({ op: 'volume-delete', volume: name, force: false });
      await control.request({ op: 'volume-create', volume: name, size, preallocation: 'off' });
    }
    const dropCreated = async (): Promise<void> => {
      if (!exists) await control.request({ op: 'volume-delete', volume: name, force: true }).catch(() => undefined);
    };
    return await writeServed(control, { poolName, name, ref, exists, force: opts.force === true }, dropCreated, async (device) => {
      const copied =
        fileSize === null
          ? await copyStreamIntoVolume(source, device, ref, !exists, bar(device.size), interrupt.signal)
          : { ...(await copyIntoVolume({ fd: source.fd, file, size: fileSize }, device, !exists, bar(fileSize), interrupt.signal)), bytesRead: fileSize };
      return { ...copied, created: !exists, replacedIncomplete: redo, volumeSize: device.size };
    });
  } finally {
    control.close();
  }
}

interface ExportOptions {
  format?: string;
  subformat?: string;
  force?: boolean;
  allowIncomplete?: boolean;
  salvage?: boolean;
  cache: CacheMode;
}

async function exportImage(ref: string, file: string, opts: ExportOptions, cmd: Command): Promise<void> {
  const bad: Range[] | undefined = opts.salvage === true ? [] : undefined;
  const g = globals(cmd);
  const named = parseExportRef(ref);
  const poolName = named.pool;
  const format = formatOption(opts.format) ?? (file === '-' ? 'raw' : formatFromName(file));
  const subformat = subformatOption(format, opts.subformat);
  if (format !== 'raw' && bad !== undefined) throw new Error(`--salvage writes raw images only (not ${format})`);
  const copy = (device: BlockDevice & Mappable, bar: (total: number) => ProgressBar): Promise<ExportCopy> =>
    format === 'raw'
      ? exportDevice(device, file, opts.force === true, g.home, bad, ref, bar).then((r) => ({ ...r, format, subformat: null, fileSize: r.size }))
      : exportNative(device, file, format, subformat, () => openTarget(file, opts.force === true, new Registry(g.home)), bar(device.size));
  const control = await ControlClient.connect(g.home, poolName);
  let live = 0;
  let what: ExportedLayer | undefined;
  const spec = { kind: 'export' as const, target: `${ref} to ${file === '-' ? 'stdout' : file}`, restart: `strata export ${ref} ${file}${file === '-' ? '' : ' --force'}`, signal: interrupt.signal };
  const result = await jobsFor(g.home, poolName).run(spec, async (job) => {
    const bar = (total: number): ProgressBar => new JobProgressBar(`export ${ref}`, total, job);
    return control
      ? exportServed(control, named, opts.allowIncomplete === true, (device, exported, clients) => {
          what = exported;
          live = clients;
          return copy(device, bar);
        })
      : withPool(g.home, poolName, { readOnly: true, direct: opts.cache === 'none' }, async ({ pool }) => {
          what = await resolveExportRef(named, catalogNames(pool));
          const device = await openExported(pool, poolName, what, opts.allowIncomplete === true);
          try {
            return await copy(device, bar);
          } finally {
            await device.close();
          }
        });
  });
  const fields = exportedFields(what!);
  // A snapshot or a template says what it is; a volume's summary stays as it always read.
  const shown = what!.kind === 'volume' ? ref : `${what!.kind} ${ref}`;
  // Other clients of a served volume may write while it is read: what the image holds is not one moment's state.
  const liveRead = live > 0 ? { liveClients: live } : {};
  if (live > 0 && !g.json) process.stderr.write(`strata: warning: ${ref} had ${live} connected client${live === 1 ? '' : 's'} while it was exported: the image is not a point-in-time copy if ${live === 1 ? 'it' : 'they'} wrote meanwhile\n`);
  const unreadable = bad === undefined ? undefined : mergeRanges(bad);
  const lost = (unreadable ?? []).reduce((sum, r) => sum + r.length, 0);
  const salvaged = unreadable === undefined ? {} : { unreadable, unreadableBytes: lost };
  const target = file === '-' ? 'stdout' : file;
  if (unreadable !== undefined && !g.json) {
    const listed = unreadable.slice(0, 10);
    for (const r of listed) process.stderr.write(`strata: warning: ${ref}: ${formatSize(r.length)} at offset ${r.offset} does not verify; zero-filled in ${target}\n`);
    if (unreadable.length > listed.length) process.stderr.write(`strata: warning: ${ref}: … and ${unreadable.length - listed.length} more ranges (--json lists them all)\n`);
  }
  const lostText = unreadable === undefined ? '' : `, ${formatSize(lost)} unreadable (zero-filled)`;
  const as = format === 'raw' ? '' : ` (${result.subformat === null ? format : `${format} ${result.subformat}`}, ${formatSize(result.fileSize)} file)`;
  if (file === '-') {
    // The image is on stdout: the summary goes to stderr, in JSON with --json.
    const json = { pool: poolName, ...fields, file: 'stdout', ...result, ...salvaged, ...liveRead };
    process.stderr.write(g.json ? `${JSON.stringify(json, null, 2)}\n` : `exported ${shown} to stdout${as}: ${formatSize(result.size)}, ${formatSize(result.bytesWritten)} of data${lostText}\n`);
    return;
  }
  const json = { pool: poolName, ...fields, file, ...result, ...salvaged, ...liveRead };
  report(g, json, `exported ${shown} to ${file}${as}: ${formatSize(result.size)}, ${formatSize(result.bytesWritten)} written, ${formatSize(result.size - result.bytesWritten)} left sparse${lostText}`);
}

/** Opens what the name stands for read-only: a volume (refused while an import left it incomplete, unless asked), or a frozen snapshot or template. */
async function openExported(pool: Pool, poolName: string, what: ExportedLayer, allowIncomplete: boolean): Promise<VolumeHandle> {
  if (what.kind === 'snapshot') return openFrozen(pool, { volume: what.volume, snapshot: what.snapshot });
  if (what.kind === 'template') return openFrozen(pool, { template: what.template });
  const name = what.volume;
  const info = await findVolume(pool, poolName, name);
  if (info.incomplete && !allowIncomplete) throw new IncompleteVolumeError(poolName, name, '--allow-incomplete exports what it holds');
  return aboutVolume(poolName, name, () => pool.openVolume(name, { readOnly: true }));
}

type ExportCopy = NativeExportResult;

/** Copies an open volume (in-process, or a served one's NBD export) to FILE or stdout. */
async function exportDevice(volume: BlockDevice & Mappable, file: string, force: boolean, home: string, bad: Range[] | undefined, ref: string, bar: (total: number) => ProgressBar): Promise<{ size: number; bytesWritten: number }> {
  if (file === '-') return { size: volume.size, ...(await copyToStream(volume, process.stdout, bar(volume.size), bad, interrupt.signal)) };
  const fd = openTarget(file, force, new Registry(home));
  try {
    try {
      fs.ftruncateSync(fd, volume.size);
    } catch (err) {
      if (isFileTooLarge(err)) throw new Error(`cannot export ${ref}: ${tooLargeMessage(file, volume.size)}`);
      throw new Error(`cannot make ${file} ${formatSize(volume.size)} long: ${systemReason(err)}`);
    }
    const copied = await copyFromVolume(volume, { fd, file }, bar(volume.size), bad, interrupt.signal);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    return { size: volume.size, ...copied };
  } catch (err) {
    // What is there is not the volume: leave no half-written image behind.
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw err;
  }
}

/**
 * Export from a served pool, read over the server's NBD export of the
 * volume, snapshot (`VOL@SNAP`) or template, with block status, so holes
 * stay holes. Clients of a volume keep running: their writes during the copy
 * may or may not be in the image (`clients` says how many there were when it
 * started); a snapshot or a template is frozen, whoever reads it.
 */
async function exportServed<T>(control: ControlClient, named: ExportRef, allowIncomplete: boolean, copy: (device: NbdDevice, what: ExportedLayer, clients: number) => Promise<T>): Promise<T> {
  try {
    const what = await resolveExportRef(named, servedNames(control));
    if (what.kind === 'volume') await servedInfo(control, named.pool, what.volume, allowIncomplete);
    const { device, endpoint } = await connectServed(control, named.pool, layerExportName(what), false);
    try {
      return await copy(device, what, what.kind === 'volume' ? endpoint.clients : 0);
    } finally {
      await device.close().catch(() => undefined);
    }
  } finally {
    control.close();
  }
}

/**
 * Opens the export target without truncating it, and empties it only once it
 * is known to be a plain file nobody holds: --force must never wipe a pool
 * file, the one being exported from least of all (its lock is held right here).
 */
export function openTarget(file: string, overwrite: boolean, registry: Registry): number {
  const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(file, O_WRONLY | O_CREAT | (overwrite ? 0 : O_EXCL), 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${file} already exists (use --force to overwrite it)`);
    throw new Error(`cannot write ${file}: ${systemReason(err)}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Error(`${file} is not a regular file`);
    const pool = registry.readable().find((r) => r.backing.kind === 'file' && sameFile(registry.filePath(r), st));
    if (pool) throw new Error(`${file} is the file of pool '${pool.name}'; not overwriting it`);
    if (!tryLock(fd)) throw new Error(`${file} is in use by another process; not overwriting it`);
    fs.ftruncateSync(fd, 0);
    return fd;
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

function sameFile(path: string, st: fs.Stats): boolean {
  try {
    const other = fs.statSync(path);
    return other.dev === st.dev && other.ino === st.ino;
  } catch {
    return false;
  }
}
