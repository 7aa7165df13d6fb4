import type { BlockDevice, WriteOptions, WriteZeroesOptions } from './device.js';
import { PassThroughDevice } from './pass-through.js';
import { BlockDeviceError, type BlockErrorCode, type BlockOp } from './errors.js';
import { Rng } from './rng.js';

/** One way to fail. All given conditions must hold for the rule to fire. */
export interface FaultRule {
  /** Operations the rule applies to; all if omitted. */
  ops?: readonly BlockOp[];
  /** Only requests that touch [start, end) in bytes. */
  range?: { start: number; end: number };
  /** Fire only once this many matching requests have passed. */
  after?: number;
  /** Fire with this probability (seeded), 1 if omitted. */
  probability?: number;
  /** Fire at most this many times; unlimited if omitted. */
  times?: number;
  /** The error code to fail with; 'EIO' if omitted. */
  error?: BlockErrorCode;
  /**
   * A failed write first lands a seeded subset of its 512-byte sectors, as a
   * disk that fails midway (or a file system that fills up midway) leaves
   * part of the request written. Off by default: the write reaches nothing.
   */
  torn?: boolean;
}

export interface FaultyDeviceOptions {
  rules?: FaultRule[];
  seed?: number;
  /** Added delay per request in milliseconds (0 = none); a uniform random jitter up to this value if `jitter`. */
  latencyMs?: number;
  jitter?: boolean;
}

interface RuleState {
  rule: FaultRule;
  seen: number;
  fired: number;
}

/**
 * Wraps any device and fails chosen requests with chosen errors. A failed
 * write does not reach the inner device at all, as when a disk rejects it,
 * unless its rule tears it (some sectors land first). Block status and the
 * redundancy hook pass through ungated.
 */
export class FaultyDevice extends PassThroughDevice {
  /** Count of requests failed so far, per operation. */
  readonly failures: Record<BlockOp, number> = { read: 0, write: 0, flush: 0, discard: 0, writeZeroes: 0 };
  private rules: RuleState[] = [];
  private readonly rng: Rng;
  private readonly latencyMs: number;
  private readonly jitter: boolean;

  constructor(inner: BlockDevice, opts: FaultyDeviceOptions = {}) {
    super(inner);
    this.rng = new Rng(opts.seed ?? 1);
    this.latencyMs = opts.latencyMs ?? 0;
    this.jitter = opts.jitter ?? false;
    for (const r of opts.rules ?? []) this.addRule(r);
  }

  override get name(): string {
    return `faulty(${this.inner.name})`;
  }

  addRule(rule: FaultRule): void {
    this.rules.push({ rule, seen: 0, fired: 0 });
  }

  clearRules(): void {
    this.rules = [];
  }

  override async read(buf: Uint8Array, offset: number): Promise<void> {
    await this.gate('read', offset, buf.length);
    return this.inner.read(buf, offset);
  }

  override async write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    const fired = await this.gate('write', offset, buf.length, false);
    if (!fired) return this.inner.write(buf, offset, opts);
    if (fired.rule.torn) await this.landSome(buf, offset);
    throw fired.error;
  }

  private async landSome(buf: Uint8Array, offset: number): Promise<void> {
    const SECTOR = 512;
    for (let s = Math.floor(offset / SECTOR) * SECTOR; s < offset + buf.length; s += SECTOR) {
      if (this.rng.below(2) === 0) continue;
      const from = Math.max(s, offset);
      const to = Math.min(s + SECTOR, offset + buf.length);
      await this.inner.write(buf.subarray(from - offset, to - offset), from);
    }
  }

  override async flush(): Promise<void> {
    await this.gate('flush', 0, this.size);
    return this.inner.flush();
  }

  override async discard(offset: number, length: number): Promise<void> {
    await this.gate('discard', offset, length);
    return this.inner.discard(offset, length);
  }

  override async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    await this.gate('writeZeroes', offset, length);
    return this.inner.writeZeroes(offset, length, opts);
  }

  /** Applies latency and the rules; throws the fault, or with `throwIt` false returns it. */
  private async gate(op: BlockOp, offset: number, length: number, throwIt = true): Promise<{ rule: FaultRule; error: BlockDeviceError } | undefined> {
    if (this.latencyMs > 0) {
      const ms = this.jitter ? this.rng.next() * this.latencyMs : this.latencyMs;
      await new Promise((r) => setTimeout(r, ms));
    }
    for (const s of this.rules) {
      const r = s.rule;
      if (r.ops && !r.ops.includes(op)) continue;
      if (r.range && (offset >= r.range.end || offset + Math.max(length, 1) <= r.range.start)) continue;
      s.seen++;
      if (r.after !== undefined && s.seen <= r.after) continue;
      if (r.times !== undefined && s.fired >= r.times) continue;
      if (r.probability !== undefined && this.rng.next() >= r.probability) continue;
      s.fired++;
      this.failures[op]++;
      const error = new BlockDeviceError(r.error ?? 'EIO', this.name, op, 'injected fault', offset, length);
      if (throwIt) throw error;
      return { rule: r, error };
    }
    return undefined;
  }
}
