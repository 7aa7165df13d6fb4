import type { Command } from 'commander';
import { jobsFor, type JobControl } from '../../src/host/jobs.js';
import { parseOtherPoint, parseSnapshotRef } from '../../src/host/diff-points.js';
import { parseVolumeRef } from '../../src/host/registry.js';
import { ReceiveInterrupted } from '../../src/migrate/receive.js';
import { ReceiveNote } from '../../src/migrate/receive-note.js';
import { receiveVolume, sendVolume } from '../../src/migrate/send-volume.js';
import { globals, printJson, ProgressBar, report, type GlobalOptions } from '../output.js';
import { formatSize } from '../size.js';
import { interrupt, interruptible } from '../interruptible.js';
import { rateOption } from './snapshot.js';
import type { CommandGroup } from './index.js';

export const sendCommands: CommandGroup = (program) => {
  program
    .command('send <pool/vol[@snap]>')
    .description('write a send stream on stdout: every snapshot of the volume up to SNAP (or to the volume as it is now), after its origin when it is a linked clone; with --from, only the increments after BASE')
    .option('--from <snap>', 'the base snapshot (@BASE): only what came after it goes into the stream')
    .option('--resume <token>', "continue a receive that was cut short, from the receiver's resume token")
    .option('--rate <size>', 'most bytes of stream per second (e.g. 50M); unlimited by default')
    .action((ref: string, opts: SendOptions, cmd: Command) => interruptible(() => sendCommand(ref, opts, cmd)));
  program
    .command('receive <pool/vol>')
    .description('apply a send stream from stdin to POOL/VOL; one cut short leaves what it received durable and prints a resume token')
    .option('--token', 'print the resume token of an interrupted receive into POOL/VOL, and nothing else')
    .action((ref: string, opts: { token?: boolean }, cmd: Command) => interruptible(() => receiveCommand(ref, opts, cmd)));
};

interface SendOptions {
  from?: string;
  resume?: string;
  rate?: string;
}

/** Progress on stderr (stdout is the stream), and the job's. */
function progressOf(label: string, job: JobControl): (done: number, total: number) => void {
  let bar: ProgressBar | undefined;
  return (done, total) => {
    job.progress(done, total);
    if (total > 0) (bar ??= new ProgressBar(label, total)).update(done);
  };
}

async function sendCommand(ref: string, opts: SendOptions, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const r = parseSnapshotRef(ref, true);
  const from = opts.from === undefined ? null : parseOtherPoint(opts.from, r);
  const rate = rateOption(opts.rate);
  if (process.stdout.isTTY === true) throw new Error('send writes a binary stream on stdout: pipe it (strata send … | strata receive …, or > FILE)');
  const spec = { kind: 'send' as const, target: `${ref}${from ? ` from @${from}` : ''} to stdout`, restart: 'strata send --resume TOKEN (the token strata receive --token prints on the receiver)', signal: interrupt.signal, ...(rate !== undefined ? { rate } : {}) };
  // A reader that goes away (EPIPE) fails this send, with its job and its temporary snapshot accounted for, rather than ending the process as for `map | head`.
  const out = process.stdout;
  const exits = out.listeners('error');
  out.removeAllListeners('error');
  out.on('error', () => undefined);
  let result;
  try {
    result = await jobsFor(g.home, r.pool).run(spec, (job) =>
      sendVolume(g.home, r, { from, ...(opts.resume !== undefined ? { resume: opts.resume } : {}), ...(rate !== undefined ? { rate } : {}) }, out, { signal: job.signal, progress: progressOf(`send ${ref}`, job) }),
    );
  } finally {
    out.removeAllListeners('error');
    for (const l of exits) out.on('error', l as (err: Error) => void);
  }
  const what = `${result.origin ? `origin ${result.origin.name}, then ` : ''}${result.from ? `from @${result.from.name} ` : ''}to ${result.temporary ? 'now' : `@${result.to.name}`}`;
  const human = `sent ${r.pool}/${r.volume} ${what}${result.resumed ? ' (resumed)' : ''}: ${result.sections} section${result.sections === 1 ? '' : 's'}, ${formatSize(result.dataBytes)} of data, ${formatSize(result.zeroBytes)} of zeroes as records, ${formatSize(result.streamBytes)} of stream`;
  summary(g, result, human);
}

/** The summary goes to stderr: stdout is (send) or was (receive) the stream. */
function summary(g: GlobalOptions, json: unknown, human: string): void {
  process.stderr.write(g.json ? `${JSON.stringify(json, null, 2)}\n` : `${human}\n`);
}

async function receiveCommand(ref: string, opts: { token?: boolean }, cmd: Command): Promise<void> {
  const g = globals(cmd);
  const r = parseVolumeRef(ref);
  if (opts.token === true) {
    const token = new ReceiveNote(g.home, r.pool).token(r.volume);
    if (token === null) throw new Error(`no interrupted receive into ${ref}`);
    if (g.json) return printJson({ pool: r.pool, volume: r.volume, token });
    return report(g, { token }, token);
  }
  if (process.stdin.isTTY === true) throw new Error('receive reads a send stream on stdin: pipe one in (strata send … | strata receive …, or < FILE)');
  const spec = { kind: 'receive' as const, target: `${ref} from stdin`, restart: `strata send --resume $(strata receive ${ref} --token) … | strata receive ${ref}`, signal: interrupt.signal };
  try {
    const result = await jobsFor(g.home, r.pool).run(spec, (job) => receiveVolume(g.home, r, process.stdin, { signal: job.signal, progress: progressOf(`receive ${ref}`, job) }));
    const extra = [result.createdVolume ? 'created the volume' : '', result.origin ? `a clone of template ${result.origin.template}${result.origin.reused ? ' (in the pool already)' : ' (made)'}` : '', result.resumed ? 'resumed' : ''].filter((s) => s !== '').join(', ');
    const snaps = result.snapshots.length > 0 ? `snapshots ${result.snapshots.map((s) => `@${s}`).join(' ')}` : 'no snapshots';
    summary(g, result, `received into ${ref}${extra ? ` (${extra})` : ''}: ${snaps}, ${formatSize(result.dataBytes)} written, ${formatSize(result.zeroBytes)} zeroed, ${formatSize(result.streamBytes)} of stream`);
  } catch (err) {
    if (err instanceof ReceiveInterrupted) throw new Error(`${err.message}; what arrived is kept: resume token ${err.token}`);
    throw err;
  } finally {
    process.stdin.destroy();
  }
}
