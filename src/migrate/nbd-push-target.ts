import type { Extent } from '../blockdev/index.js';
import { FLAG_READ_ONLY, FLAG_SEND_FAST_ZERO, FLAG_SEND_WRITE_ZEROES, MAX_PAYLOAD, NBD_ENOTSUP, STATE_HOLE, STATE_ZERO } from '../nbd/constants.js';
import { NbdClient, NbdClientError } from '../nbd/index.js';
import { formatSize } from '../host/size.js';
import { volumeRuns } from '../host/volume-runs.js';
import { joined, subtract, type Span } from './nbd-push-ranges.js';
import type { PushTargetAddress } from './nbd-push-uri.js';

/** One zeroing request covers at most this much (NBD lengths are 32-bit; servers cap them lower still). */
const ZERO_SPAN = 1024 ** 3;
const READ_PIECE = 1024 * 1024;
const ZERO_BUFFER = Buffer.alloc(4 * 1024 * 1024);

/**
 * The NBD export a volume is pushed into: the raw client, so that zeroing
 * can use the flags the export offers (write-zeroes that may unmap, fast
 * zero), and what base:allocation said reads as zero before the push began
 * (nothing needs zeroing there).
 */
export class PushTarget {
  /** Ranges known to read as zeroes, sorted, from the export's block status at connect. */
  private zeroRuns: Span[] = [];
  private fastZero: boolean;
  private readonly maxPayload: number;

  private constructor(
    readonly client: NbdClient,
    readonly uri: string,
  ) {
    const d = client.details;
    this.fastZero = (d.flags & FLAG_SEND_FAST_ZERO) !== 0;
    this.maxPayload = Math.min(d.blockSizes?.maximum ?? MAX_PAYLOAD, MAX_PAYLOAD);
  }

  get size(): number {
    return this.client.size;
  }

  /** The export offers no write-zeroes: zeroing it sends zero bytes. */
  get zeroesAsData(): boolean {
    return (this.client.details.flags & FLAG_SEND_WRITE_ZEROES) === 0;
  }

  /** Connects, refuses an export that is read-only or smaller than `need` bytes, and reads its map. */
  static async open(address: PushTargetAddress, need: number, sourceName: string): Promise<PushTarget> {
    let client: NbdClient;
    try {
      client = await NbdClient.connect(address.connect);
    } catch (err) {
      throw new Error(`cannot connect to ${address.uri}: ${err instanceof Error ? err.message : String(err)}`);
    }
    const t = new PushTarget(client, address.uri);
    try {
      if ((client.details.flags & FLAG_READ_ONLY) !== 0) throw new Error(`${address.uri} is read-only: a push needs a writable export`);
      if (client.size < need) throw new Error(`${address.uri} (${formatSize(client.size)}, ${client.size} bytes) is smaller than ${sourceName} (${formatSize(need)}, ${need} bytes)`);
      await t.readZeroMap(need);
      return t;
    } catch (err) {
      client.destroy();
      throw err;
    }
  }

  /** The parts of [offset, offset+length) that base:allocation did not say read as zeroes, in order. */
  notZero(offset: number, length: number): Span[] {
    return subtract([{ offset, length }], this.zeroRuns);
  }

  /** What reads as zeroes on the export now, adjacent runs joined. */
  async zeroSpans(size: number): Promise<Span[]> {
    return joined((await this.extents(size)).filter((e) => e.zero));
  }

  /** Writes `data` at `offset` in requests the export takes, all in flight at once. */
  async write(data: Buffer, offset: number): Promise<void> {
    const parts: Promise<void>[] = [];
    for (let at = 0; at < data.length; at += this.maxPayload) parts.push(this.client.write(data.subarray(at, Math.min(at + this.maxPayload, data.length)), offset + at));
    await Promise.all(parts);
  }

  /**
   * Makes [offset, offset+length) read as zeroes without sending them: write
   * zeroes that may unmap (a hole on a thin target), fast when the export
   * offers it and falling back to its slow zeroing when it declines; plain
   * zero buffers only for an export without write-zeroes.
   */
  async zero(offset: number, length: number): Promise<void> {
    if (this.zeroesAsData) {
      // One buffer of zeroes, one request at a time: a hole of a terabyte must not become a terabyte of buffers.
      const piece = Math.min(ZERO_BUFFER.length, this.maxPayload);
      for (let at = offset; at < offset + length; at += piece) await this.client.write(ZERO_BUFFER.subarray(0, Math.min(piece, offset + length - at)), at);
      return;
    }
    const parts: Promise<void>[] = [];
    for (let at = offset; at < offset + length; at += ZERO_SPAN) parts.push(this.zeroes(at, Math.min(ZERO_SPAN, offset + length - at)));
    await Promise.all(parts);
  }

  private async zeroes(offset: number, length: number): Promise<void> {
    if (this.fastZero) {
      try {
        return await this.client.writeZeroes(offset, length, { fastZero: true });
      } catch (err) {
        if (!(err instanceof NbdClientError) || err.errno !== NBD_ENOTSUP) throw err;
        // The export zeroes only by writing: it may still do that itself, so no bytes cross the wire.
        this.fastZero = false;
      }
    }
    await this.client.writeZeroes(offset, length);
  }

  /** Reads in 1 MiB requests, all in flight: the client gathers a reply before copying it, and smaller replies go faster (measured: 1 GiB in 1.7–2.4 s against 2.7–3.9 s in 4 MiB ones). */
  async read(buf: Buffer, offset: number): Promise<void> {
    const parts: Promise<void>[] = [];
    const piece = Math.min(READ_PIECE, this.maxPayload);
    for (let at = 0; at < buf.length; at += piece) parts.push(this.client.readInto(buf.subarray(at, Math.min(at + piece, buf.length)), offset + at));
    await Promise.all(parts);
  }

  flush(): Promise<void> {
    return this.client.flush();
  }

  /** The export's block status over [0, size) now, as extents (all data when it offers no base:allocation). */
  async extents(size: number): Promise<Extent[]> {
    const out: Extent[] = [];
    for await (const run of volumeRuns(this.mappable(size))) out.push({ offset: run.offset, length: run.length, hole: run.hole, zero: run.zero });
    return out;
  }

  async close(): Promise<void> {
    await this.client.disconnect().catch(() => this.client.destroy());
  }

  destroy(): void {
    this.client.destroy();
  }

  private async readZeroMap(size: number): Promise<void> {
    // A hole beside an allocated zero run: one range that reads as zeroes.
    this.zeroRuns = await this.zeroSpans(size);
  }

  private mappable(size: number): Parameters<typeof volumeRuns>[0] {
    const client = this.client;
    return {
      name: this.uri,
      size,
      blockStatus: async (offset: number, length: number): Promise<Extent[]> => {
        if (client.metaContextId === undefined) return [{ offset, length, hole: false, zero: false }];
        const out: Extent[] = [];
        let pos = offset;
        for (const d of await client.blockStatus(offset, Math.min(length, 0xffffffff))) {
          const n = Math.min(d.length, offset + length - pos);
          if (n <= 0) break;
          out.push({ offset: pos, length: n, hole: (d.flags & STATE_HOLE) !== 0, zero: (d.flags & STATE_ZERO) !== 0 });
          pos += n;
        }
        if (out.length === 0) throw new Error(`${this.uri}: block status answered nothing at offset ${offset}`);
        return out;
      },
    };
  }
}
