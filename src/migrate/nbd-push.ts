import { ControlClient } from '../host/control-client.js';
import { jobsFor } from '../host/jobs.js';
import { withPool } from '../host/open-pool.js';
import { parseVolumeRef } from '../host/registry.js';
import { formatSize } from '../host/size.js';
import type { PushEvent, PushOutcome } from './nbd-push-job.js';
import { pushAsJob } from './nbd-push-job.js';
import { isNbdPushProgress } from './nbd-push-progress.js';
import { parseNbdUri } from './nbd-push-uri.js';

/** What a push shows while it runs: a progress bar per phase on a terminal, nothing by default. */
export interface PushUi {
  progress(e: PushEvent): void;
  /** The push ended (either way): erase what progress drew. */
  finish(): void;
}

const quiet: PushUi = { progress: () => undefined, finish: () => undefined };

export interface MigrateToNbdOptions {
  online: boolean;
  rate?: number;
  json: boolean;
  /** Ctrl-C: the push stops at its next chunk and its job ends cancelled. */
  signal?: AbortSignal;
}

/**
 * `strata migrate POOL/VOL nbd://HOST:PORT/EXPORT`: pushes the volume into
 * an NBD export, in the server that holds its pool when it is served
 * (through the control socket), else in this process on the pool opened
 * read-only. Prints the outcome; the source is always kept.
 */
export async function migrateToNbd(home: string, ref: string, uri: string, opts: MigrateToNbdOptions, ui: PushUi = quiet): Promise<void> {
  const { pool: poolName, volume } = parseVolumeRef(ref);
  const address = parseNbdUri(uri);
  let outcome: PushOutcome;
  const events: PushUi = {
    progress: (e) => {
      if (e.phase !== 'ready') return ui.progress(e);
      ui.finish();
      const line = `${ref} is in sync with ${uri} (job ${e.job}): every write is mirrored from now on; ready: the VM may be migrated\n`;
      // With --json stdout holds one document, the outcome: the moment goes to stderr.
      (opts.json ? process.stderr : process.stdout).write(line);
    },
    finish: () => ui.finish(),
  };
  try {
    const control = await ControlClient.connect(home, poolName);
    if (control) outcome = await pushViaServer(home, control, { volume, uri, online: opts.online, ...(opts.rate !== undefined ? { rate: opts.rate } : {}) }, events, opts.signal);
    else {
      if (opts.online) throw new Error(`pool '${poolName}' is not served: --online mirrors the writes of a served volume's clients, and nobody writes to ${ref} now; push it without --online`);
      outcome = await withPool(home, poolName, { readOnly: true }, ({ pool }) =>
        pushAsJob(pool, volume, address, { poolName, jobs: jobsFor(home, poolName), ...(opts.signal ? { signal: opts.signal } : {}), onEvent: (e) => events.progress(e) }, opts.rate),
      );
    }
  } catch (err) {
    if (opts.signal?.aborted) throw new Error(`interrupted: the push of ${ref} stopped and its job is cancelled; ${uri} holds part of it (push again to finish)`);
    throw err;
  } finally {
    ui.finish();
  }
  if (opts.json) process.stdout.write(`${JSON.stringify(outcome, null, 2)}\n`);
  else process.stdout.write(`${describe(ref, outcome)}\n`);
}

function describe(ref: string, o: PushOutcome): string {
  const zeroed = o.zeroesSentAsData ? `${formatSize(o.bytesZeroed)} of zeroes written (the export has no write-zeroes)` : `${formatSize(o.bytesZeroed)} zeroed without data`;
  const moved = `${formatSize(o.bytesWritten)} written, ${zeroed}, ${formatSize(o.bytesAlreadyZero)} already zero there`;
  const kept = `${ref} is kept (an NBD target is not a pool of this host)`;
  if (o.online) return `pushed ${ref} (${formatSize(o.size)}) to ${o.target} as job ${o.job}, online: ${moved} in ${o.copySeconds} s, then mirrored until its last client disconnected; the target is flushed; ${kept}`;
  return `pushed ${ref} (${formatSize(o.size)}) to ${o.target} as job ${o.job}: ${moved} in ${o.copySeconds} s; verified (${formatSize(o.bytesVerified)} read back in ${o.verifySeconds} s); ${kept}`;
}

/** Sends the push to the server of the pool and follows it; Ctrl-C cancels the server's job and waits for it to end. */
async function pushViaServer(home: string, control: ControlClient, req: { volume: string; uri: string; online: boolean; rate?: number }, ui: PushUi, signal: AbortSignal | undefined): Promise<PushOutcome> {
  let job: number | undefined;
  const cancel = (): void => {
    if (job === undefined) {
      // The job is not known yet: closing the connection cancels it on the server's side.
      control.close();
      return;
    }
    void cancelJob(home, control.pool, job);
  };
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    const reply = await control.request({ op: 'migrate-nbd', ...req }, (p) => {
      if (!isNbdPushProgress(p)) return;
      job = p.job;
      ui.progress(p);
    });
    return reply.result as PushOutcome;
  } finally {
    signal?.removeEventListener('abort', cancel);
    control.close();
  }
}

async function cancelJob(home: string, pool: string, id: number): Promise<void> {
  const c = await ControlClient.connect(home, pool).catch(() => undefined);
  if (!c) return;
  try {
    await c.request({ op: 'job-cancel', id }).catch(() => undefined);
  } finally {
    c.close();
  }
}
