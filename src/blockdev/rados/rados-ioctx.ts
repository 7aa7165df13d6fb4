import { RADOS_ERR } from './errno.js';
import { offLoop, OPERATION_ORDER_READS_WRITES, type Handle } from './librados.js';
import { RadosError, type RadosCluster } from './rados-cluster.js';

const { ENOENT, ERANGE } = RADOS_ERR;

/** Who holds a lock on an object, as `rados lock info` shows it. */
export interface Locker {
  /** The holder's client name, e.g. client.4123. */
  client: string;
  cookie: string;
  /** The holder's address, which fencing blocklists. */
  address: string;
}

/**
 * Operations on the objects of one Ceph pool. Data operations are
 * asynchronous and resolve with librados's return value (negative errno on
 * failure); locks and small reads of metadata throw a RadosError.
 */
export class RadosIoctx {
  constructor(
    readonly cluster: RadosCluster,
    private readonly handle: Handle,
    readonly pool: string,
  ) {}

  private get api() {
    return this.cluster.api;
  }

  /**
   * Bytes read (fewer at the object's end), or ENOENT for an object never
   * written. Ordered after every write sent before it, answered or not:
   * write-behind resolves writes before RADOS answers them, and a read must see them.
   */
  async read(oid: string, buf: Uint8Array, offset: number): Promise<number> {
    const op = this.api.createReadOp();
    const bytesRead = Buffer.alloc(8);
    try {
      this.api.readOpRead(op, offset, buf.length, buf, bytesRead, null);
      const ret = await this.cluster.submit((c) => this.api.aioReadOpOperate(op, this.handle, c, oid, OPERATION_ORDER_READS_WRITES) as number, [buf, bytesRead]);
      return ret < 0 ? ret : Number(bytesRead.readBigUInt64LE(0));
    } finally {
      this.api.releaseReadOp(op);
    }
  }

  write(oid: string, buf: Uint8Array, offset: number): Promise<number> {
    return this.cluster.submit((c) => this.api.aioWrite(this.handle, oid, c, buf, buf.length, offset) as number, buf);
  }

  writeFull(oid: string, buf: Uint8Array): Promise<number> {
    return this.cluster.submit((c) => this.api.aioWriteFull(this.handle, oid, c, buf, buf.length) as number, buf);
  }

  /** Removes the object; one that does not exist is not an error. */
  async remove(oid: string): Promise<number> {
    const ret = await this.cluster.submit((c) => this.api.aioRemove(this.handle, oid, c) as number);
    return ret === ENOENT ? 0 : ret;
  }

  /** Zeroes a range of an object that exists; nothing happens to one that does not (it reads as zeroes already). */
  zero(oid: string, offset: number, length: number): Promise<number> {
    return this.operate(oid, (op) => this.api.writeOpZero(op, offset, length));
  }

  /** Cuts an existing object at `offset` (the rest reads as zeroes); no object is created. */
  truncate(oid: string, offset: number): Promise<number> {
    return this.operate(oid, (op) => this.api.writeOpTruncate(op, offset));
  }

  private async operate(oid: string, add: (op: Handle) => void): Promise<number> {
    const op = this.api.createWriteOp();
    try {
      this.api.writeOpAssertExists(op);
      add(op);
      const ret = await this.cluster.submit((c) => this.api.aioWriteOpOperate(op, this.handle, c, oid, null, 0) as number);
      return ret === ENOENT ? 0 : ret;
    } finally {
      this.api.releaseWriteOp(op);
    }
  }

  /** The whole of a small object, or undefined when it does not exist. */
  async readSmall(oid: string, limit = 1 << 20): Promise<Buffer | undefined> {
    const buf = Buffer.alloc(limit);
    const ret = await this.read(oid, buf, 0);
    if (ret === ENOENT) return undefined;
    if (ret < 0) throw new RadosError(ret, `reading ${this.pool}/${oid}`);
    return buf.subarray(0, ret);
  }

  async writeSmall(oid: string, data: Uint8Array): Promise<void> {
    const ret = await this.writeFull(oid, data);
    if (ret < 0) throw new RadosError(ret, `writing ${this.pool}/${oid}`);
  }

  async removeObject(oid: string): Promise<void> {
    const ret = await this.remove(oid);
    if (ret < 0) throw new RadosError(ret, `removing ${this.pool}/${oid}`);
  }

  /** Takes lock `name` on the object; EBUSY when another cookie holds it. */
  async lockExclusive(oid: string, name: string, cookie: string, description: string): Promise<number> {
    return (await offLoop(this.api.lockExclusive, this.handle, oid, name, cookie, description, null, 0)) as number;
  }

  async unlock(oid: string, name: string, cookie: string): Promise<number> {
    return (await offLoop(this.api.unlock, this.handle, oid, name, cookie)) as number;
  }

  async breakLock(oid: string, name: string, locker: Locker): Promise<number> {
    return (await offLoop(this.api.breakLock, this.handle, oid, name, locker.client, locker.cookie)) as number;
  }

  async lockers(oid: string, name: string): Promise<Locker[]> {
    for (let size = 4096; ; size *= 4) {
      const bufs = [Buffer.alloc(size), Buffer.alloc(size), Buffer.alloc(size), Buffer.alloc(size)] as const;
      const lens = [[size], [size], [size], [size]];
      const exclusive = [0];
      const ret = (await offLoop(this.api.listLockers, this.handle, oid, name, exclusive, bufs[0], lens[0], bufs[1], lens[1], bufs[2], lens[2], bufs[3], lens[3])) as number;
      if (ret === ERANGE && size < 1 << 24) continue;
      if (ret === ENOENT) return [];
      if (ret < 0) throw new RadosError(ret, `listing the lockers of ${this.pool}/${oid}`);
      const list = (i: 1 | 2 | 3): string[] => bufs[i].subarray(0, lens[i]![0]).toString('utf8').split('\0').filter((s) => s !== '');
      const [clients, cookies, addresses] = [list(1), list(2), list(3)];
      return clients.map((client, i) => ({ client, cookie: cookies[i] ?? '', address: addresses[i] ?? '' }));
    }
  }

  close(): void {
    this.api.ioctxDestroy(this.handle);
  }
}
