import { BlockDeviceError, checkRange, checkWritable, type BlockDevice, type BlockErrorCode, type BlockOp, type Extent, type WriteOptions, type WriteZeroesOptions } from '../blockdev/index.js';
import { FLAG_READ_ONLY, MAX_PAYLOAD, NBD_EINVAL, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM, NBD_ESHUTDOWN, STATE_HOLE, STATE_ZERO } from './constants.js';
import { NbdClient, NbdClientError, type NbdClientOptions } from './client.js';

/**
 * A remote NBD export as a BlockDevice, so everything that works on a device
 * (copy, migration, the shared property test) works across the wire.
 */
export class NbdDevice implements BlockDevice {
  readonly name: string;
  readonly size: number;
  readonly blockSize: number;
  readonly preferredBlockSize: number;
  readonly discardZeroes = false;
  readonly readOnly: boolean;
  private readonly maxPayload: number;

  private constructor(
    private readonly client: NbdClient,
    name: string,
  ) {
    const d = client.details;
    this.name = name;
    this.size = d.size;
    this.blockSize = Math.max(d.blockSizes?.minimum ?? 512, 1);
    this.preferredBlockSize = d.blockSizes?.preferred ?? 4096;
    this.maxPayload = Math.min(d.blockSizes?.maximum ?? MAX_PAYLOAD, MAX_PAYLOAD);
    this.readOnly = (d.flags & FLAG_READ_ONLY) !== 0;
  }

  static async connect(opts: NbdClientOptions): Promise<NbdDevice> {
    const client = await NbdClient.connect(opts);
    const where = opts.socket ?? `${opts.host ?? '127.0.0.1'}:${opts.port ?? 10809}`;
    return new NbdDevice(client, `nbd:${where}/${opts.export ?? ''}`);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, 'read', offset, buf.length);
    const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
    await this.split('read', offset, buf.length, (at, n) => this.client.readInto(b.subarray(at - offset, at - offset + n), at));
  }

  async write(buf: Uint8Array, offset: number, opts?: WriteOptions): Promise<void> {
    checkWritable(this, 'write', offset, buf.length);
    checkRange(this, 'write', offset, buf.length);
    await this.split('write', offset, buf.length, (at, n) => this.client.write(buf.subarray(at - offset, at - offset + n), at, opts?.fua ? { fua: true } : {}));
  }

  async flush(): Promise<void> {
    await this.call('flush', 0, 0, () => this.client.flush());
  }

  async discard(offset: number, length: number): Promise<void> {
    checkWritable(this, 'discard', offset, length);
    checkRange(this, 'discard', offset, length);
    if (length > 0) await this.call('discard', offset, length, () => this.client.trim(offset, length));
  }

  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    checkWritable(this, 'writeZeroes', offset, length);
    checkRange(this, 'writeZeroes', offset, length);
    if (length > 0) {
      await this.call('writeZeroes', offset, length, () => this.client.writeZeroes(offset, length, { fua: opts?.fua ?? false, noHole: !opts?.mayUnmap }));
    }
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    checkRange(this, 'read', offset, length);
    if (this.client.metaContextId === undefined) return [{ offset, length, hole: false, zero: false }];
    const out: Extent[] = [];
    let pos = offset;
    while (pos < offset + length) {
      const want = Math.min(offset + length - pos, 0xffffffff);
      const descriptors = await this.call('read', pos, want, () => this.client.blockStatus(pos, want));
      if (descriptors.length === 0) throw new BlockDeviceError('EIO', this.name, 'read', 'block status reply without descriptors', pos, want);
      for (const d of descriptors) {
        const n = Math.min(d.length, offset + length - pos);
        if (n <= 0) break;
        out.push({ offset: pos, length: n, hole: (d.flags & STATE_HOLE) !== 0, zero: (d.flags & STATE_ZERO) !== 0 });
        pos += n;
      }
    }
    return out;
  }

  async close(): Promise<void> {
    await this.client.disconnect();
  }

  private async split(op: BlockOp, offset: number, length: number, run: (at: number, n: number) => Promise<void>): Promise<void> {
    const parts: Promise<void>[] = [];
    for (let at = offset; at < offset + length; at += this.maxPayload) {
      const n = Math.min(this.maxPayload, offset + length - at);
      parts.push(this.call(op, at, n, () => run(at, n)));
    }
    await Promise.all(parts);
  }

  private async call<T>(op: BlockOp, offset: number, length: number, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      const code: BlockErrorCode =
        err instanceof NbdClientError
          ? err.errno === NBD_EPERM ? 'EROFS'
            : err.errno === NBD_ENOSPC ? 'ENOSPC'
            : err.errno === NBD_EINVAL ? 'EINVAL'
            : err.errno === NBD_ENOTSUP ? 'ENOTSUP'
            : err.errno === NBD_ESHUTDOWN ? 'ECLOSED'
            : 'EIO'
          : 'EIO';
      throw new BlockDeviceError(code, this.name, op, err instanceof Error ? err.message : String(err), offset, length, err);
    }
  }
}
