import koffi from 'koffi';

/**
 * librados's C API, reached through koffi (an FFI with prebuilt binaries, so
 * nothing compiles at install time; Debian's librados2 is the library).
 *
 * Two rules keep the event loop safe:
 * - Completions of asynchronous calls arrive on librados threads, as bytes on
 *   a pipe (doorbell.ts). A librados call that blocks (connect, locks, mon
 *   commands) runs through koffi's `.async`, on libuv's thread pool, so that
 *   the event loop goes on taking them meanwhile.
 * - Buffers handed to an asynchronous read are filled after the call returns,
 *   so they are passed by pointer and kept referenced until the completion.
 * - RADOS orders one client's writes to an object, but a read may pass a
 *   write still in flight (one waiting for a degraded object's recovery, say)
 *   unless it carries ORDER_READS_WRITES: every data read does.
 */

export type Handle = unknown;

/** librados.h: a read flagged so is not answered before the writes to its object sent ahead of it. */
export const OPERATION_ORDER_READS_WRITES = 4;

/** A function koffi made from a C prototype: callable, and callable on a worker thread. */
interface CFunction {
  (...args: unknown[]): unknown;
  async(...args: unknown[]): void;
}

export interface LibRados {
  create2: CFunction;
  confReadFile: CFunction;
  confSet: CFunction;
  connect: CFunction;
  shutdown: CFunction;
  ioctxCreate: CFunction;
  ioctxDestroy: CFunction;
  getInstanceId: CFunction;
  getAddrs: CFunction;
  waitForLatestOsdmap: CFunction;
  blocklistAdd: CFunction;
  createCompletion: CFunction;
  completionIsComplete: CFunction;
  completionReturn: CFunction;
  completionRelease: CFunction;
  createReadOp: CFunction;
  releaseReadOp: CFunction;
  readOpRead: CFunction;
  aioReadOpOperate: CFunction;
  aioWrite: CFunction;
  aioWriteFull: CFunction;
  aioRemove: CFunction;
  aioStat: CFunction;
  createWriteOp: CFunction;
  releaseWriteOp: CFunction;
  writeOpZero: CFunction;
  writeOpTruncate: CFunction;
  writeOpAssertExists: CFunction;
  aioWriteOpOperate: CFunction;
  read: CFunction;
  writeFull: CFunction;
  remove: CFunction;
  lockExclusive: CFunction;
  unlock: CFunction;
  breakLock: CFunction;
  listLockers: CFunction;
  bufferFree: CFunction;
  /** The one registered completion callback: librados passes back the request number as its argument. */
}

let loaded: LibRados | undefined;

export class LibRadosMissing extends Error {}

/** Loads librados once; a missing library is a clear error naming the package. */
export function librados(): LibRados {
  if (loaded !== undefined) return loaded;
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load('librados.so.2');
  } catch (err) {
    throw new LibRadosMissing(`librados is not installed (apt-get install librados2): ${(err as Error).message}`);
  }
  koffi.pointer('rados_t', koffi.opaque());
  koffi.pointer('rados_ioctx_t', koffi.opaque());
  koffi.pointer('rados_completion_t', koffi.opaque());
  koffi.pointer('rados_write_op_t', koffi.opaque());
  koffi.pointer('rados_read_op_t', koffi.opaque());
  const f = (proto: string): CFunction => lib.func(proto) as CFunction;
  const api: LibRados = {
    create2: f('int rados_create2(_Out_ rados_t *pcluster, const char *cluster, const char *name, uint64_t flags)'),
    confReadFile: f('int rados_conf_read_file(rados_t cluster, const char *path)'),
    confSet: f('int rados_conf_set(rados_t cluster, const char *option, const char *value)'),
    connect: f('int rados_connect(rados_t cluster)'),
    shutdown: f('void rados_shutdown(rados_t cluster)'),
    ioctxCreate: f('int rados_ioctx_create(rados_t cluster, const char *pool, _Out_ rados_ioctx_t *ioctx)'),
    ioctxDestroy: f('void rados_ioctx_destroy(rados_ioctx_t io)'),
    getInstanceId: f('uint64_t rados_get_instance_id(rados_t cluster)'),
    getAddrs: f('int rados_getaddrs(rados_t cluster, _Out_ char **addrs)'),
    waitForLatestOsdmap: f('int rados_wait_for_latest_osdmap(rados_t cluster)'),
    blocklistAdd: f('int rados_blocklist_add(rados_t cluster, const char *client_address, uint32_t expire_seconds)'),
    createCompletion: f('int rados_aio_create_completion2(void *arg, void *complete, _Out_ rados_completion_t *pc)'),
    completionIsComplete: f('int rados_aio_is_complete(rados_completion_t c)'),
    completionReturn: f('int rados_aio_get_return_value(rados_completion_t c)'),
    completionRelease: f('void rados_aio_release(rados_completion_t c)'),
    createReadOp: f('rados_read_op_t rados_create_read_op()'),
    releaseReadOp: f('void rados_release_read_op(rados_read_op_t op)'),
    readOpRead: f('void rados_read_op_read(rados_read_op_t op, uint64_t offset, size_t len, uint8_t *buf, uint8_t *bytes_read, int *prval)'),
    aioReadOpOperate: f('int rados_aio_read_op_operate(rados_read_op_t op, rados_ioctx_t io, rados_completion_t c, const char *oid, int flags)'),
    aioWrite: f('int rados_aio_write(rados_ioctx_t io, const char *oid, rados_completion_t c, const uint8_t *buf, size_t len, uint64_t off)'),
    aioWriteFull: f('int rados_aio_write_full(rados_ioctx_t io, const char *oid, rados_completion_t c, const uint8_t *buf, size_t len)'),
    aioRemove: f('int rados_aio_remove(rados_ioctx_t io, const char *oid, rados_completion_t c)'),
    aioStat: f('int rados_aio_stat(rados_ioctx_t io, const char *oid, rados_completion_t c, uint64_t *psize, int64_t *pmtime)'),
    createWriteOp: f('rados_write_op_t rados_create_write_op()'),
    releaseWriteOp: f('void rados_release_write_op(rados_write_op_t op)'),
    writeOpZero: f('void rados_write_op_zero(rados_write_op_t op, uint64_t off, uint64_t len)'),
    writeOpTruncate: f('void rados_write_op_truncate(rados_write_op_t op, uint64_t off)'),
    writeOpAssertExists: f('void rados_write_op_assert_exists(rados_write_op_t op)'),
    aioWriteOpOperate: f('int rados_aio_write_op_operate(rados_write_op_t op, rados_ioctx_t io, rados_completion_t c, const char *oid, void *mtime, int flags)'),
    read: f('int rados_read(rados_ioctx_t io, const char *oid, uint8_t *buf, size_t len, uint64_t off)'),
    writeFull: f('int rados_write_full(rados_ioctx_t io, const char *oid, const uint8_t *buf, size_t len)'),
    remove: f('int rados_remove(rados_ioctx_t io, const char *oid)'),
    lockExclusive: f('int rados_lock_exclusive(rados_ioctx_t io, const char *oid, const char *name, const char *cookie, const char *desc, void *duration, uint8_t flags)'),
    unlock: f('int rados_unlock(rados_ioctx_t io, const char *oid, const char *name, const char *cookie)'),
    breakLock: f('int rados_break_lock(rados_ioctx_t io, const char *oid, const char *name, const char *client, const char *cookie)'),
    listLockers: f(
      'intptr_t rados_list_lockers(rados_ioctx_t io, const char *oid, const char *name, _Out_ int *exclusive, uint8_t *tag, _Inout_ size_t *tag_len, uint8_t *clients, _Inout_ size_t *clients_len, uint8_t *cookies, _Inout_ size_t *cookies_len, uint8_t *addrs, _Inout_ size_t *addrs_len)',
    ),
    bufferFree: f('void rados_buffer_free(char *buf)'),
  };
  loaded = api;
  return api;
}

/** Runs a blocking librados call on libuv's thread pool (see the rule above). */
export function offLoop(fn: CFunction, ...args: unknown[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, result: unknown) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(result)));
  });
}

/** A C string that librados allocated, read and freed. */
export function takeString(api: LibRados, pointer: unknown): string {
  if (pointer === null || pointer === undefined) return '';
  const text = koffi.decode(pointer, 'char', -1) as string;
  api.bufferFree(pointer);
  return text;
}
