/**
 * Ctrl-C (or SIGTERM) during a copy (import, export, export-diff,
 * import-diff) stops it between chunks instead of killing the process
 * mid-write: the usual failure path then removes a half-written file or
 * leaves an import restartable, and the pool is closed cleanly. A second
 * signal kills as usual.
 */
export const interrupt = new AbortController();

export async function interruptible<T>(job: () => Promise<T>): Promise<T> {
  const stop = (): void => interrupt.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    return await job();
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
