import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadXxhash } from '../blockdev/xxhash.js';
import { diffLayers, type Pool } from '../qcowlike/index.js';
import type { DiffPoint } from '../snapshot/diff-stream.js';
import { AdminError } from '../host/admin.js';
import { drained, writeDiff } from '../host/diff-export.js';
import { decodeToken } from './resume-token.js';
import { isTemporary, planSend } from './send-plan.js';
import { encodeManifest, FRAME_DATA, FRAME_END, FRAME_FINISH, frameHead, MAX_FRAME, type SendManifest } from './send-stream.js';

export interface SendResult {
  volume: string;
  stream: string;
  /** Sections in the stream (a resumed one counts only those it carried). */
  sections: number;
  from: DiffPoint | null;
  to: DiffPoint;
  /** The stream carried the volume's origin as a base section (it is a linked clone). */
  origin: DiffPoint | null;
  resumed: boolean;
  records: number;
  dataBytes: number;
  zeroBytes: number;
  streamBytes: number;
}

export interface SendOptions {
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
  /** Bytes of stream per second at most. */
  rate?: number;
}

/**
 * Writes the send stream of snapshot `to` of `volume` into `out` (not ended
 * here): every snapshot of its history up to `to` (from `from` on, when
 * given), one diff stream each, after the volume's origin when it is a
 * linked clone sent whole. With `resume` (a receiver's token), only what the
 * receiver does not hold yet: from the token's section, and in it from the
 * token's offset on.
 */
export async function sendChain(pool: Pool, poolName: string, req: { volume: string; to: string; from: string | null; resume?: string; omitBase?: boolean }, out: Writable, opts: SendOptions = {}): Promise<SendResult> {
  await loadXxhash();
  const plan = await planSend(pool, poolName, req);
  let resume: SendManifest['resume'] = null;
  if (req.resume !== undefined) {
    const t = decodeToken(req.resume);
    if (t.volume !== req.volume || t.to !== req.to || t.from !== req.from) throw new AdminError('EINVAL', `the resume token is for ${t.volume}@${t.to}${t.from ? ` from @${t.from}` : ''}, not ${req.volume}@${req.to}${req.from ? ` from @${req.from}` : ''}`);
    if (t.stream !== plan.stream) throw new AdminError('EINVAL', `the resume token is for another stream of ${poolName}/${req.volume}@${req.to} (its history changed since: a snapshot was deleted or made again)`);
    if (t.section > plan.steps.length) throw new AdminError('EINVAL', `the resume token names section ${t.section}; the stream has ${plan.steps.length}`);
    resume = { section: t.section, through: t.through };
  }
  const manifest: SendManifest = {
    stream: plan.stream,
    volume: req.volume,
    created: new Date().toISOString(),
    sections: plan.steps.map(({ from, to, size, base }) => ({ from, to, size, ...(base ? { base } : {}), ...(base && req.omitBase === true ? { omitted: true as const } : {}) })),
    temporary: isTemporary(req.to),
    resume,
  };
  const { bytes, seed } = encodeManifest(manifest);
  const pace = pacer(opts.rate, opts.signal);
  let streamBytes = 0;
  const put = async (b: Buffer): Promise<void> => {
    if (out.destroyed || out.writableEnded) throw new Error('the stream was closed before the send ended');
    streamBytes += b.length;
    if (!out.write(b)) await drained(out);
    await pace(b.length);
  };
  await put(bytes);
  const start = Math.max(resume?.section ?? 0, manifest.sections[0]!.omitted ? 1 : 0);
  const steps = plan.steps.slice(start);
  const total = steps.reduce((n, s) => n + s.size, 0);
  let before = 0;
  const totals = { records: 0, dataBytes: 0, zeroBytes: 0 };
  for (const [k, step] of steps.entries()) {
    const index = start + k;
    const framed = new FrameWriter((b) => put(b), index, seed);
    const ends = { from: step.from, to: step.to, toSource: step.toSource, size: step.size, volume: req.volume };
    const t = await writeDiff(pool, ends, diffLayers(pool, step.fromLayer, step.toLayer), framed, {
      after: k === 0 ? (resume?.through ?? 0) : 0,
      signal: opts.signal,
      onProgress: (done) => opts.onProgress?.(before + done, total),
    });
    await framed.close();
    await put(frameHead(FRAME_FINISH, index, 0, seed));
    totals.records += t.records;
    totals.dataBytes += t.dataBytes;
    totals.zeroBytes += t.zeroBytes;
    before += step.size;
  }
  await put(frameHead(FRAME_END, steps.length, 0, seed));
  opts.onProgress?.(total, total);
  const last = plan.steps[plan.steps.length - 1]!;
  const firstOwn = plan.steps.find((s) => !s.base)!;
  const origin = plan.steps[0]!.base ? plan.steps[0]!.to : null;
  return { volume: req.volume, stream: plan.stream, sections: steps.length, from: origin ? null : firstOwn.from, to: last.to, origin, resumed: resume !== null, ...totals, streamBytes };
}

/** Holds a writer to `rate` bytes per second since its first byte; none when unset. */
function pacer(rate: number | undefined, signal: AbortSignal | undefined): (bytes: number) => Promise<void> {
  const started = performance.now();
  let sent = 0;
  return async (bytes) => {
    signal?.throwIfAborted();
    if (rate === undefined || rate <= 0) return;
    sent += bytes;
    const due = (sent / rate) * 1000 - (performance.now() - started);
    if (due > 0) await sleep(due, undefined, { signal });
  };
}

/** The Writable a section's diff stream is written into: it cuts what it is given into data frames of that section. */
class FrameWriter extends Writable {
  constructor(
    private readonly put: (b: Buffer) => Promise<void>,
    private readonly section: number,
    private readonly seed: number,
  ) {
    super({ highWaterMark: MAX_FRAME });
    // The writer into it meets a failure on its next write or wait (writeDiff checks both), and close() reports it.
    this.on('error', () => undefined);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.frames(chunk).then(
      () => done(),
      (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
    );
  }

  private async frames(chunk: Buffer): Promise<void> {
    for (let at = 0; at < chunk.length; at += MAX_FRAME) {
      const piece = chunk.subarray(at, Math.min(chunk.length, at + MAX_FRAME));
      await this.put(frameHead(FRAME_DATA, this.section, piece.length, this.seed));
      await this.put(piece);
    }
  }

  /** Every frame given so far is written out. */
  close(): Promise<void> {
    if (this.errored) return Promise.reject(this.errored);
    return new Promise((resolve, reject) => {
      this.once('error', reject);
      this.end((err?: Error | null) => (err ? reject(err) : resolve()));
    });
  }
}
