import { errnoName, RADOS_ERR } from './errno.js';
import { librados, offLoop, takeString, type Handle, type LibRados } from './librados.js';
import { Doorbell } from './doorbell.js';
import { RadosIoctx } from './rados-ioctx.js';

/** Where a cluster is and who we are to it: the standard Ceph config and keyring, never a key on the command line. */
export interface RadosTarget {
  /** ceph.conf to read; default: librados's own search (CEPH_CONF, /etc/ceph/ceph.conf, ~/.ceph/ceph.conf, ./ceph.conf). */
  conf?: string;
  /** The client name without 'client.' (default 'admin'); its keyring is found through the config. */
  id?: string;
}

/** A librados error: the negative errno librados returned, with its name. */
export class RadosError extends Error {
  constructor(
    readonly errno: number,
    readonly what: string,
  ) {
    super(`${what}: ${errnoName(errno)}`);
  }
}


/**
 * One connection to a Ceph cluster. Asynchronous operations complete
 * through the process's one doorbell (doorbell.ts), which keeps the process
 * alive while any is in flight.
 */
export class RadosCluster {
  private static doorbell: Doorbell | undefined;
  private inFlightOps = 0;
  private closed = false;

  private constructor(
    readonly api: LibRados,
    private readonly handle: Handle,
    readonly target: RadosTarget,
  ) {
    RadosCluster.doorbell ??= new Doorbell(api);
  }

  /** Connects with the config's monitors and keyring; fails within 30 s when they do not answer. */
  static async connect(target: RadosTarget = {}): Promise<RadosCluster> {
    const api = librados();
    const out: Handle[] = [null];
    const name = `client.${target.id ?? 'admin'}`;
    check(api.create2(out, 'ceph', name, 0) as number, 'rados_create2');
    const handle = out[0];
    try {
      const confRet = api.confReadFile(handle, target.conf ?? null) as number;
      if (confRet < 0) throw new RadosError(confRet, `cannot read the Ceph config ${target.conf ?? '(default search path)'}`);
      for (const [key, value] of [
        ['client_mount_timeout', '30'],
        ['rados_mon_op_timeout', '30'],
        ['log_to_stderr', 'false'],
        ['err_to_stderr', 'false'],
      ] as const) {
        check(api.confSet(handle, key, value) as number, `rados_conf_set ${key}`);
      }
      const ret = (await offLoop(api.connect, handle)) as number;
      if (ret < 0) throw new RadosError(ret, `cannot connect to the Ceph cluster as ${name} (config ${target.conf ?? 'default'})`);
    } catch (err) {
      api.shutdown(handle);
      throw err;
    }
    return new RadosCluster(api, handle, target);
  }

  /** The client's global id, as `ceph` names it: client.<id>. */
  instanceId(): bigint {
    return BigInt(this.api.getInstanceId(this.handle) as number | bigint);
  }

  /** This client's address, as lock holders and blocklists name it. */
  address(): string {
    const out: Handle[] = [null];
    check(this.api.getAddrs(this.handle, out) as number, 'rados_getaddrs');
    return takeString(this.api, out[0]);
  }

  async ioctx(pool: string): Promise<RadosIoctx> {
    const out: Handle[] = [null];
    const ret = (await offLoop(this.api.ioctxCreate, this.handle, pool, out)) as number;
    if (ret < 0) throw new RadosError(ret, ret === -2 ? `Ceph pool '${pool}' does not exist` : `cannot open Ceph pool '${pool}'`);
    return new RadosIoctx(this, out[0], pool);
  }

  /** Fences a client: the OSDs refuse its operations from the next map on, and this client waits for that map. */
  async blocklist(address: string, expireSeconds: number): Promise<void> {
    const ret = (await offLoop(this.api.blocklistAdd, this.handle, address, expireSeconds)) as number;
    if (ret < 0) throw new RadosError(ret, `cannot blocklist ${address}`);
    const wait = (await offLoop(this.api.waitForLatestOsdmap, this.handle)) as number;
    if (wait < 0) throw new RadosError(wait, 'waiting for the OSD map after a blocklist');
  }

  /**
   * Starts an asynchronous operation: `start` gets a completion and issues the
   * call; resolves with librados's return value (negative errno on failure).
   */
  submit(start: (completion: Handle) => number, keep?: unknown): Promise<number> {
    if (this.closed) return Promise.resolve(RADOS_ERR.ESHUTDOWN);
    const bell = RadosCluster.doorbell!;
    const out: Handle[] = [null];
    const made = this.api.createCompletion(bell.stream, bell.callback, out) as number;
    if (made < 0) return Promise.resolve(made);
    const completion = out[0];
    const ret = start(completion);
    if (ret < 0) {
      this.api.completionRelease(completion);
      return Promise.resolve(ret);
    }
    this.inFlightOps++;
    return new Promise((resolve) =>
      bell.expect({
        completion,
        settle: (answer) => {
          this.inFlightOps--;
          // Referenced until here: librados reads from or writes into it until it answers.
          void keep;
          resolve(answer);
        },
      }),
    );
  }

  /** Operations still in flight. */
  get inFlight(): number {
    return this.inFlightOps;
  }

  /** Waits for operations in flight, then disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    while (this.inFlightOps > 0) await new Promise((r) => setTimeout(r, 5));
    this.closed = true;
    await offLoop(this.api.shutdown, this.handle);
  }

  get rawHandle(): Handle {
    return this.handle;
  }
}

export function check(ret: number, what: string): number {
  if (ret < 0) throw new RadosError(ret, what);
  return ret;
}
