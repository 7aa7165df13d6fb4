/** The pool's device is locked by another process (a server, another command): nothing may touch it. */
export class PoolInUseError extends Error {}

export function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ');
}
