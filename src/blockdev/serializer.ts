/**
 * Runs async tasks one after another in call order. A task that fails rejects
 * its own caller only: the next task still runs, so one failed commit or
 * superblock write does not wedge every later one.
 */
export class Serializer {
  private tail: Promise<void> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Resolves (never rejects) once every task queued so far has settled. */
  idle(): Promise<void> {
    return this.tail;
  }
}
