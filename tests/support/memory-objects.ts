import { RADOS_ERR, type ObjectStore } from '../../src/blockdev/rados/index.js';

type Kind = 'read' | 'write' | 'remove' | 'zero' | 'truncate';

/**
 * RADOS objects in memory, for the device's tests without a cluster. An
 * operation takes effect when it is sent (RADOS orders one client's
 * operations on an object, so a later read sees it); its answer can be held
 * back (`hold`) and released later, and chosen operations fail with an errno
 * instead of taking effect (`failNext`).
 */
export class MemoryObjects implements ObjectStore {
  readonly pool = 'memory';
  readonly objects = new Map<string, Buffer>();
  private held: (() => void)[] | undefined;
  private failures: { kind: Kind; errno: number }[] = [];
  /** Operations sent so far, by kind. */
  readonly sent: Record<Kind, number> = { read: 0, write: 0, remove: 0, zero: 0, truncate: 0 };

  /** From now on answers wait for release(). */
  hold(): void {
    this.held ??= [];
  }

  /** Answers everything held and stops holding. */
  release(): void {
    const h = this.held ?? [];
    this.held = undefined;
    for (const answer of h) answer();
  }

  get heldCount(): number {
    return this.held?.length ?? 0;
  }

  failNext(kind: Kind, errno: number): void {
    this.failures.push({ kind, errno });
  }

  read(oid: string, buf: Uint8Array, offset: number): Promise<number> {
    return this.op('read', () => {
      const o = this.objects.get(oid);
      if (o === undefined) return RADOS_ERR.ENOENT;
      const n = Math.max(0, Math.min(buf.length, o.length - offset));
      buf.set(o.subarray(offset, offset + n));
      return n;
    });
  }

  write(oid: string, buf: Uint8Array, offset: number): Promise<number> {
    return this.op('write', () => {
      const o = this.grown(oid, offset + buf.length);
      o.set(buf, offset);
      return 0;
    });
  }

  remove(oid: string): Promise<number> {
    return this.op('remove', () => (this.objects.delete(oid), 0));
  }

  zero(oid: string, offset: number, length: number): Promise<number> {
    return this.op('zero', () => {
      const o = this.objects.get(oid);
      if (o !== undefined) o.fill(0, offset, Math.min(o.length, offset + length));
      return 0;
    });
  }

  truncate(oid: string, offset: number): Promise<number> {
    return this.op('truncate', () => {
      const o = this.objects.get(oid);
      if (o !== undefined) this.objects.set(oid, Buffer.concat([o.subarray(0, Math.min(offset, o.length)), Buffer.alloc(Math.max(0, offset - o.length))]));
      return 0;
    });
  }

  async readSmall(oid: string): Promise<Buffer | undefined> {
    return this.objects.get(oid);
  }

  async writeSmall(oid: string, data: Uint8Array): Promise<void> {
    this.objects.set(oid, Buffer.from(data));
  }

  async removeObject(oid: string): Promise<void> {
    this.objects.delete(oid);
  }

  private grown(oid: string, length: number): Buffer {
    const o = this.objects.get(oid) ?? Buffer.alloc(0);
    if (o.length >= length) return o;
    const bigger = Buffer.concat([o, Buffer.alloc(length - o.length)]);
    this.objects.set(oid, bigger);
    return bigger;
  }

  private op(kind: Kind, apply: () => number): Promise<number> {
    this.sent[kind]++;
    const f = this.failures.findIndex((x) => x.kind === kind);
    const ret = f >= 0 ? this.failures.splice(f, 1)[0]!.errno : apply();
    if (this.held === undefined) return Promise.resolve(ret);
    const held = this.held;
    return new Promise((resolve) => held.push(() => resolve(ret)));
  }
}
