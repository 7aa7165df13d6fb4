/**
 * At most `depth` tasks at once (grains inflating while the next ones are
 * read); the first failure is thrown by the next `add` or by `drain`, and
 * later tasks are not started.
 */
export class TaskWindow {
  private readonly running = new Set<Promise<void>>();
  private failure: { err: unknown } | undefined;

  constructor(private readonly depth: number) {}

  async add(task: () => Promise<void>): Promise<void> {
    while (this.running.size >= this.depth && !this.failure) await Promise.race(this.running);
    if (this.failure) throw this.failure.err;
    const p: Promise<void> = task()
      .catch((err: unknown) => {
        this.failure ??= { err };
      })
      .finally(() => this.running.delete(p));
    this.running.add(p);
  }

  async drain(): Promise<void> {
    await this.settle();
    if (this.failure) throw this.failure.err;
  }

  /** Waits for every task started, throwing nothing: a caller that failed on its own must not leave writes running. */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running);
  }
}
