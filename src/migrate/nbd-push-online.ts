import type { BlockDevice } from '../blockdev/index.js';
import type { Pool } from '../qcowlike/index.js';
import { AdminError, aboutVolume } from '../host/admin.js';
import type { Jobs } from '../host/jobs.js';
import { MigrationRecords } from '../host/migration-records.js';
import { oneLine } from '../host/pool-errors.js';
import { volumeRuns, type Mappable } from '../host/volume-runs.js';
import { NbdDevice } from '../nbd/index.js';
import { MirrorDevice, type CopyRange } from './mirror-device.js';
import type { MovableDevice } from './movable-device.js';
import { cancelReason, type PushEvent, type PushOutcome } from './nbd-push-job.js';
import { subtract, type Span } from './nbd-push-ranges.js';
import { PushTarget } from './nbd-push-target.js';
import type { PushTargetAddress } from './nbd-push-uri.js';

/** What an online push needs of the server's live volumes (src/host/live-volumes.ts). */
export interface LiveVolumeSource {
  acquire(pool: string, volume: string): Promise<{ device: MovableDevice; exportName: string; release(): Promise<void> }>;
  untilNoClients(exportName: string, signal?: AbortSignal): Promise<void>;
}

export interface OnlinePushContext {
  /** Where hot migrations are recorded: one of the volume refuses the push. */
  home?: string;
  poolName: string;
  jobs: Jobs;
  live: LiveVolumeSource;
  signal?: AbortSignal;
  onEvent?(e: PushEvent): void;
}

/**
 * An online push (QEMU's drive-mirror to an NBD target, the way a VM's
 * storage follows it to another host): the export's device gets a
 * write-blocking mirror to the target, the background copy brings over what
 * the volume held, and from the moment the copy is done ("ready") the
 * target stays in step with every acknowledged write until the volume's
 * last client disconnects (the VM runs on the other host now) or the job is
 * cancelled; then the target is flushed, the mirror taken away, and the
 * job ends. The volume is never changed by it: a target error stops the
 * mirror and fails the job, and clients never see it.
 */
export async function pushOnlineAsJob(pool: Pool, volume: string, address: PushTargetAddress, ctx: OnlinePushContext, rate: number | undefined): Promise<PushOutcome> {
  const ref = `${ctx.poolName}/${volume}`;
  const info = await aboutVolume(ctx.poolName, volume, () => pool.volumeInfo(volume));
  if (info.incomplete) throw new AdminError('EINVAL', `volume '${ref}' is incomplete (an import of it did not finish): there is nothing whole to push`);
  // One mirror at a time on an export: a second would take the first one's place under the clients.
  const busy = ctx.home === undefined ? undefined : new MigrationRecords(ctx.home).busy(ctx.poolName, volume);
  if (busy) throw new AdminError('EBUSY', `volume '${ref}' is being migrated to ${busy.target.pool}/${busy.target.volume}: an online push waits for that to end`);
  const key = `${ctx.home ?? ''}\0${ref}`;
  if (pushing.has(key)) throw new AdminError('EBUSY', `volume '${ref}' is being pushed online already`);
  const spec = { kind: 'migrate' as const, target: `${ref} to ${address.uri} (online)`, total: info.size, ...(rate !== undefined ? { rate } : {}), restart: `strata migrate ${ref} ${address.uri} --online (a push starts over)`, ...(ctx.signal ? { signal: ctx.signal } : {}) };
  pushing.add(key);
  return ctx.jobs.run(spec, async (job) => {
    const held = await ctx.live.acquire(ctx.poolName, volume);
    try {
      const source = held.device.volume as BlockDevice & Mappable;
      // The target's map first (what reads as zero there needs no zeroing), then the device the mirror writes through.
      const map = await PushTarget.open(address, source.size, ref);
      const zeroed = await map.zeroSpans(source.size);
      await map.close();
      let target: NbdDevice;
      try {
        target = await NbdDevice.connect(address.connect);
      } catch (err) {
        throw new Error(`cannot connect to ${address.uri}: ${oneLine(err)}`);
      }
      try {
        const r = await mirrorUntilIdle(held.device, held.exportName, source, target, zeroed, ctx, {
          signal: job.signal,
          ...(rate !== undefined ? { rate } : {}),
          onProgress: (done, total) => {
            job.progress(done, total);
            ctx.onEvent?.({ job: job.id, phase: 'copy', done, total });
          },
          onReady: () => ctx.onEvent?.({ job: job.id, phase: 'ready', done: source.size, total: source.size }),
        });
        await target.close();
        return { pool: ctx.poolName, volume, target: address.uri, job: job.id, sourceKept: true as const, size: source.size, bytesWritten: r.copied, bytesZeroed: r.zeroed, zeroesSentAsData: false, bytesAlreadyZero: source.size - r.copied - r.zeroed, bytesVerified: 0, copySeconds: r.copySeconds, verifySeconds: 0, online: true };
      } catch (err) {
        await target.close().catch(() => undefined);
        throw job.signal.aborted ? cancelReason(job.signal, err) : err instanceof AdminError ? err : new Error(`the online push of ${ref} to ${address.uri} failed (the volume is untouched and its clients saw nothing): ${oneLine(err)}`);
      }
    } finally {
      await held.release();
    }
  }).finally(() => pushing.delete(key));
}

/** The volumes being pushed online by this process. */
const pushing = new Set<string>();

interface MirrorRun {
  signal: AbortSignal;
  rate?: number;
  onProgress(done: number, total: number): void;
  onReady(): void;
}

/** Interposes the mirror, copies, keeps mirroring until no client is left, flushes, and takes the mirror away. */
async function mirrorUntilIdle(device: MovableDevice, exportName: string, source: BlockDevice & Mappable, target: BlockDevice, zeroed: Span[], ctx: OnlinePushContext, run: MirrorRun): Promise<{ copied: number; zeroed: number; copySeconds: number }> {
  const allZero = zeroed.length === 1 && zeroed[0]!.offset === 0 && zeroed[0]!.length >= source.size;
  let failed!: (err: Error) => void;
  const failure = new Promise<never>((_, reject) => (failed = reject));
  // Never left unhandled: it only matters while someone races it.
  failure.catch(() => undefined);
  // Put in with requests held: a write on its way to the volume alone could otherwise land behind the copy of its range.
  const resume = await device.hold();
  const mirror = device.interpose((vol) => new MirrorDevice(vol, target, { targetZeroed: allZero, onFail: (err) => failed(err) }));
  resume();
  let zeroBytes = 0;
  try {
    const { ranges, total } = await copyRanges(source, zeroed);
    const started = performance.now();
    const copied = await mirror.copy(ranges, total, { signal: run.signal, onProgress: run.onProgress, ...(run.rate !== undefined ? { rate: run.rate } : {}) });
    zeroBytes = total - copied;
    await target.flush();
    const copySeconds = Math.round((performance.now() - started) / 10) / 100;
    if (mirror.failed) throw mirror.failed;
    run.onReady();
    // In step from here on; the job lasts as long as the volume has clients.
    try {
      await Promise.race([ctx.live.untilNoClients(exportName, run.signal), failure]);
    } catch (err) {
      // Cancelled while in step: what the target has is made durable before the mirror goes.
      if (run.signal.aborted && !mirror.failed) await mirror.flush().catch(() => undefined);
      throw err;
    }
    const release = await device.hold();
    try {
      if (mirror.failed) throw mirror.failed;
      await target.flush();
      if (mirror.failed) throw mirror.failed;
      device.restore();
    } finally {
      release();
    }
    return { copied, zeroed: zeroBytes, copySeconds };
  } finally {
    mirror.detach();
    const release = await device.hold();
    device.restore();
    release();
  }
}

/**
 * What the background copy must bring over: data runs as data; the
 * volume's holes as zero ranges, except where the target reads zeroes
 * already. The total is their sum (the job's progress runs over it).
 */
async function copyRanges(source: Mappable, zeroed: Span[]): Promise<{ ranges: AsyncIterable<CopyRange>; total: number }> {
  const all: CopyRange[] = [];
  for await (const r of volumeRuns(source)) {
    if (r.type === 'data') all.push({ offset: r.offset, length: r.length, kind: 'data' });
    else for (const s of subtract([{ offset: r.offset, length: r.length }], zeroed)) all.push({ ...s, kind: 'zero' });
  }
  const total = all.reduce((n, r) => n + r.length, 0);
  return {
    total,
    ranges: (async function* () {
      yield* all;
    })(),
  };
}
