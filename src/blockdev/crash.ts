import { checkRange, checkWritable, type BlockDevice, type WriteOptions, type WriteZeroesOptions } from './device.js';
import { BlockDeviceError, type BlockOp } from './errors.js';
import { Rng } from './rng.js';
import { Serializer } from './serializer.js';

/** The unit a power loss can tear a write at: one sector. */
const SECTOR = 512;

type PendingOp =
  | { kind: 'write'; offset: number; data: Buffer; durable: boolean }
  | { kind: 'discard' | 'zeroes'; offset: number; length: number; durable: boolean };

export interface CrashReport {
  /** Requests that were pending (written but not flushed) at the crash. */
  pending: number;
  kept: number;
  dropped: number;
  torn: number;
  /** The device holding exactly what survived; wrap it again to go on. */
  device: BlockDevice;
}

/**
 * Simulates power loss. Writes, discards and zeroings since the last completed
 * flush are held apart from the inner device (reads see them); flush() makes
 * them durable. crash() keeps a seeded, arbitrary subset of what was pending,
 * tearing some requests at sector granularity, drops the rest, and retires
 * this wrapper: every later request fails, as on a machine that lost power.
 * FUA writes are durable when they resolve and always survive.
 */
export class CrashSimulator implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly blockSize = SECTOR;
  readonly preferredBlockSize: number;
  readonly discardZeroes = true;
  readonly readOnly: boolean;
  private pending: PendingOp[] = [];
  private readonly flushing = new Serializer();
  private dead = false;
  private budget = Infinity;

  constructor(readonly inner: BlockDevice) {
    this.name = `crashsim(${inner.name})`;
    this.size = inner.size;
    this.preferredBlockSize = inner.preferredBlockSize;
    this.readOnly = inner.readOnly;
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  /**
   * Cuts the power after `requests` more requests: from then on every request
   * fails with EIO and nothing more reaches the device, so a crash can land
   * in the middle of whatever the layer above was doing. crash() still works.
   */
  cutAfter(requests: number): void {
    this.budget = requests;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.checkAlive('read');
    checkRange(this, 'read', offset, buf.length);
    await this.inner.read(buf, offset);
    const end = offset + buf.length;
    for (const op of this.pending) {
      const len = op.kind === 'write' ? op.data.length : op.length;
      const from = Math.max(offset, op.offset);
      const to = Math.min(end, op.offset + len);
      if (from >= to) continue;
      if (op.kind === 'write') buf.set(op.data.subarray(from - op.offset, to - op.offset), from - offset);
      else buf.fill(0, from - offset, to - offset);
    }
  }

  async write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    this.checkAlive('write');
    checkWritable(this, 'write', offset, buf.length);
    checkRange(this, 'write', offset, buf.length);
    this.pending.push({ kind: 'write', offset, data: Buffer.from(buf), durable: opts?.fua ?? false });
  }

  async discard(offset: number, length: number): Promise<void> {
    this.checkAlive('discard');
    checkWritable(this, 'discard', offset, length);
    checkRange(this, 'discard', offset, length);
    this.pending.push({ kind: 'discard', offset, length, durable: false });
  }

  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    this.checkAlive('writeZeroes');
    checkWritable(this, 'writeZeroes', offset, length);
    checkRange(this, 'writeZeroes', offset, length);
    this.pending.push({ kind: 'zeroes', offset, length, durable: opts?.fua ?? false });
  }

  /** Flushes are serialized; each covers exactly the requests that resolved before it began. */
  async flush(): Promise<void> {
    this.checkAlive('flush');
    const batch = this.pending.slice();
    await this.flushing.run(async () => {
      for (const op of batch) await this.apply(op, undefined);
      await this.inner.flush();
      const done = new Set(batch);
      this.pending = this.pending.filter((op) => !done.has(op));
    });
  }

  async close(): Promise<void> {
    if (this.dead) return;
    await this.flush();
    this.dead = true;
    await this.inner.close();
  }

  /**
   * Power loss. Each pending request is, by the seeded coin: dropped, kept
   * whole, or torn (each sector it touches kept or dropped on its own).
   * Survivors are applied in issue order, then the inner device is flushed
   * and returned; this wrapper is dead from here on.
   */
  async crash(seed: number): Promise<CrashReport> {
    if (this.dead) throw new BlockDeviceError('EIO', this.name, 'flush', 'device already crashed');
    this.dead = true;
    await this.flushing.idle();
    const rng = new Rng(seed);
    const report: CrashReport = { pending: this.pending.length, kept: 0, dropped: 0, torn: 0, device: this.inner };
    for (const op of this.pending) {
      const roll = op.durable ? 1 : rng.below(3);
      if (roll === 0) {
        report.dropped++;
      } else if (roll === 1) {
        report.kept++;
        await this.apply(op, undefined);
      } else {
        report.torn++;
        await this.apply(op, rng);
      }
    }
    this.pending = [];
    await this.inner.flush();
    return report;
  }

  /** Applies one request to the inner device, whole, or sector by sector by coin when `tear` is given. */
  private async apply(op: PendingOp, tear: Rng | undefined): Promise<void> {
    const length = op.kind === 'write' ? op.data.length : op.length;
    if (length === 0) return;
    const pieces: Array<[number, number]> = [];
    if (!tear) {
      pieces.push([op.offset, op.offset + length]);
    } else {
      for (let s = Math.floor(op.offset / SECTOR) * SECTOR; s < op.offset + length; s += SECTOR) {
        if (tear.below(2) === 0) continue;
        const from = Math.max(s, op.offset);
        const to = Math.min(s + SECTOR, op.offset + length);
        const last = pieces[pieces.length - 1];
        if (last && last[1] === from) last[1] = to;
        else pieces.push([from, to]);
      }
    }
    for (const [from, to] of pieces) {
      if (op.kind === 'write') await this.inner.write(op.data.subarray(from - op.offset, to - op.offset), from);
      else if (op.kind === 'discard' && this.inner.discardZeroes) await this.inner.discard(from, to - from);
      else await this.inner.writeZeroes(from, to - from);
    }
  }

  private checkAlive(op: BlockOp): void {
    if (this.dead || this.budget-- <= 0) throw new BlockDeviceError('EIO', this.name, op, 'device lost power (crash simulated)');
  }
}
