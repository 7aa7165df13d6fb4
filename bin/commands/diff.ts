import fs from 'node:fs';
import type net from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { adminOnPool } from '../../src/host/admin-client.js';
import { ControlClient } from '../../src/host/control-client.js';
import { exportDiff, type ExportDiffResult } from '../../src/host/diff-export.js';
import { DiffImports } from '../../src/host/diff-imports.js';
import { importDiff, type ImportDiffResult } from '../../src/host/diff-import.js';
import { parseOtherPoint, parseSnapshotRef } from '../../src/host/diff-points.js';
import { diffViaServer } from '../../src/host/diff-transfer.js';
import { systemReason } from '../../src/host/image-source.js';
import { jobsFor, type JobControl } from '../../src/host/jobs.js';
import { withPool } from '../../src/host/open-pool.js';
import { parseVolumeRef, Registry } from '../../src/host/registry.js';
import type { DiffExtent } from '../../src/snapshot/index.js';
import { globals, printJson, printTable, report, type GlobalOptions } from '../output.js';
import { formatSize } from '../size.js';
import { openTarget } from './transfer.js';
import type { CommandGroup } from './index.js';
import { interrupt, interruptible } from '../interruptible.js';

export const diffCommands: CommandGroup = (program) => {
  program
    .command('diff <pool/vol@a> [b]')
    .description('list the ranges that changed between snapshot A and snapshot B (POOL/VOL@B or @B; absent: the volume now), from metadata alone, as rbd diff does')
    .action(listDiff);
  program
    .command('export-diff <pool/vol@b> <file>')
    .description('write the changes from snapshot A (--from) to snapshot B as a diff stream to FILE (or stdout with -); without --from, a full stream of B')
    .option('--from <snap>', 'the base snapshot (@A, A or POOL/VOL@A): only what changed since it goes into the stream')
    .option('--force', 'overwrite FILE if it exists')
    .action((ref: string, file: string, opts: ExportDiffOptions, cmd: Command) => interruptible(() => exportDiffCommand(ref, file, opts, cmd)));
  program
    .command('import-diff <pool/vol> <file>')
    .description('apply a diff stream (FILE, or - for stdin) to a volume standing at its base, then make its TO snapshot; a full stream creates the volume')
    .action((ref: string, file: string, _opts: unknown, cmd: Command) => interruptible(() => importDiffCommand(ref, file, cmd)));
};

async function listDiff(aRef: string, bRef: string | undefined, _opts: unknown, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const a = parseSnapshotRef(aRef);
  const to = bRef === undefined ? null : parseOtherPoint(bRef, a);
  const extents = await adminOnPool(g.home, a.pool, { op: 'diff', volume: a.volume, from: a.snapshot!, to }, { readOnly: true });
  if (g.json) return printJson(extents);
  printTable(extents, [
    { header: 'OFFSET', value: (e: DiffExtent) => String(e.offset), align: 'right' },
    { header: 'LENGTH', value: (e) => String(e.length), align: 'right' },
    { header: 'TYPE', value: (e) => e.kind },
  ]);
  const total = (k: DiffExtent['kind']): string => formatSize(extents.filter((e) => e.kind === k).reduce((n, e) => n + e.length, 0));
  process.stdout.write(`${aRef} to ${to === null ? 'now' : `@${to}`}: ${extents.length} range${extents.length === 1 ? '' : 's'}, data ${total('data')}, zero ${total('zero')}\n`);
}

interface ExportDiffOptions {
  from?: string;
  force?: boolean;
}

async function exportDiffCommand(ref: string, file: string, opts: ExportDiffOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const r = parseSnapshotRef(ref, true);
  if (r.snapshot === null) throw new Error(`export-diff takes a snapshot (${ref}@NAME): a stream is taken from a frozen point, and its end point is what the next incremental starts from (strata snapshot create ${ref}@NAME makes one)`);
  const req = { volume: r.volume, from: opts.from === undefined ? null : parseOtherPoint(opts.from, r), to: r.snapshot };
  const target = file === '-' ? 'stdout' : file;
  const control = await ControlClient.connect(g.home, r.pool);
  const spec = { kind: 'export' as const, target: `${ref} diff${req.from ? ` from @${req.from}` : ''} to ${target}`, restart: `strata export-diff ${ref}${req.from ? ` --from @${req.from}` : ''} ${file}${file === '-' ? '' : ' --force'}`, signal: interrupt.signal };
  const result = await jobsFor(g.home, r.pool).run(spec, async (job) => {
    const sink = openSink(file, opts.force === true, new Registry(g.home));
    try {
      let out: ExportDiffResult;
      if (control) {
        let received = 0;
        out = await diffViaServer<ExportDiffResult>(control, { op: 'export-diff', ...req }, async (sock) => {
          sock.on('data', (b: Buffer) => job.progress((received += b.length)));
          await moveUntilInterrupted(sock, pipeline(sock, sink.stream, { end: false }));
        });
        if (received !== out.streamBytes) throw new Error(`the server wrote ${out.streamBytes} bytes of stream and ${received} arrived`);
      } else {
        out = await withPool(g.home, r.pool, { readOnly: true }, ({ pool }) => exportDiff(pool, r.pool, req, sink.stream, (done, total) => job.progress(done, total), job.signal));
      }
      await sink.finish();
      return out;
    } catch (err) {
      sink.abandon();
      throw err;
    } finally {
      control?.close();
    }
  });
  const how = `${result.from ? `from @${result.from.name} ` : '(full) '}to @${result.to.name}`;
  const json = { pool: r.pool, ...result, file: target };
  const human = `exported ${r.pool}/${r.volume} ${how} to ${target}: ${result.records} records, ${formatSize(result.dataBytes)} of data, ${formatSize(result.zeroBytes)} of zeroes as records, ${formatSize(result.streamBytes)} of stream`;
  // On stdout is the stream itself: the summary goes to stderr.
  if (file === '-') process.stderr.write(g.json ? `${JSON.stringify(json, null, 2)}\n` : `${human}\n`);
  else report(g, json, human);
}

interface Sink {
  stream: Writable;
  finish(): Promise<void>;
  abandon(): void;
}

/** Stdout, or FILE opened as export opens its target (never a pool's file, never one in use), made durable at the end and removed on failure. */
function openSink(file: string, force: boolean, registry: Registry): Sink {
  if (file === '-') return { stream: process.stdout, finish: async () => undefined, abandon: () => undefined };
  const fd = openTarget(file, force, registry);
  const stream = fs.createWriteStream(file, { fd, autoClose: false });
  return {
    stream,
    finish: async () => {
      await new Promise<void>((resolve, reject) => {
        stream.once('error', reject);
        stream.end(() => resolve());
      });
      try {
        fs.fsyncSync(fd);
      } catch (err) {
        throw new Error(`cannot write ${file}: ${systemReason(err)}`);
      } finally {
        fs.closeSync(fd);
      }
    },
    abandon: () => {
      stream.destroy();
      try {
        fs.closeSync(fd);
      } catch {
        // closed already by finish()
      }
      // What is there is not the stream: leave no half-written one behind.
      fs.rmSync(file, { force: true });
    },
  };
}

async function importDiffCommand(ref: string, file: string, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const { pool: poolName, volume } = parseVolumeRef(ref);
  const source = openSource(file);
  const control = await ControlClient.connect(g.home, poolName);
  const spec = { kind: 'import' as const, target: `${ref} diff from ${source.name}`, restart: `strata import-diff ${ref} ${file} (the same stream finishes the import)`, signal: interrupt.signal };
  let result: ImportDiffResult;
  try {
    result = await jobsFor(g.home, poolName).run(spec, async (job: JobControl) => {
      if (control) {
        try {
          return await diffViaServer<ImportDiffResult>(control, { op: 'import-diff', volume }, (sock) => {
            let read = 0;
            // Counted by a second listener taken on in the same tick as the pipe's, so it sees every chunk and takes none away.
            source.stream.on('data', (b: Buffer) => job.progress((read += b.length)));
            return moveUntilInterrupted(sock, pipeline(source.stream, sock));
          });
        } finally {
          control.close();
        }
      }
      return withPool(g.home, poolName, { readOnly: false }, ({ pool }) => importDiff(pool, { poolName, home: g.home }, volume, source.stream, job.signal, (done, total) => job.progress(done, total)));
    });
  } catch (err) {
    throw new Error(cutShort(g, poolName, volume, source.name, err));
  } finally {
    source.stream.destroy();
  }
  printImport(g, poolName, result, source.name);
}

/** The error of a failed import, with what the volume holds now when the import had begun writing. */
function cutShort(g: GlobalOptions, poolName: string, volume: string, name: string, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  let pending;
  try {
    pending = new DiffImports(g.home, poolName).pending(volume);
  } catch {
    pending = undefined;
  }
  if (!pending || message.includes('was cut short')) return message;
  const base = pending.from ? `@${pending.from.name} plus part of the stream` : 'part of the stream (marked incomplete)';
  return `import-diff of ${name} into ${poolName}/${volume} stopped: ${message}; ${poolName}/${volume} holds ${base}: run import-diff again with the whole stream to finish it`;
}

function printImport(g: GlobalOptions, poolName: string, r: ImportDiffResult, name: string): void {
  const ref = `${poolName}/${r.volume}`;
  const how = r.from ? `from @${r.from.name} to @${r.to.name}` : `(full) to @${r.to.name}`;
  const extra = [r.createdVolume ? `created ${ref} (${formatSize(r.size)})` : '', r.resumed ? `finished an import that was cut short${r.skippedThrough > 0 ? `, writing from ${formatSize(r.skippedThrough)} on` : ''}` : ''].filter((s) => s !== '').join(', ');
  report(g, { pool: poolName, ...r, file: name }, `applied ${name} to ${ref} ${how}${extra ? ` (${extra})` : ''}: ${r.records} records, ${formatSize(r.dataBytes)} written, ${formatSize(r.zeroBytes)} zeroed; snapshot ${ref}@${r.snapshot.name} made`);
}

function openSource(file: string): { stream: Readable; name: string } {
  if (file === '-' || file === '/dev/stdin') return { stream: process.stdin, name: 'stdin' };
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
    if (!fs.fstatSync(fd).isFile() && !fs.fstatSync(fd).isFIFO()) {
      fs.closeSync(fd);
      throw new Error(`${file} is not a regular file`);
    }
  } catch (err) {
    if (err instanceof Error && err.message.endsWith('not a regular file')) throw err;
    throw new Error(`cannot read ${file}: ${systemReason(err)}`);
  }
  return { stream: fs.createReadStream(file, { fd, highWaterMark: 1 << 20 }), name: file };
}

/** Copies until done, or until Ctrl-C, which ends the server's connection (it stops there, as on a cut stream). */
async function moveUntilInterrupted(sock: net.Socket, moving: Promise<void>): Promise<void> {
  const stop = (): void => void sock.destroy(new Error('interrupted'));
  interrupt.signal.addEventListener('abort', stop, { once: true });
  try {
    await moving;
  } finally {
    interrupt.signal.removeEventListener('abort', stop);
  }
}
