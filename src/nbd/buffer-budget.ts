/**
 * The server-wide bound on buffered bytes: READ reply buffers and WRITE
 * payloads from the moment a request is read until its reply has been handed
 * to the kernel. A connection that cannot charge its next request stops
 * reading (backpressure); nothing is refused.
 *
 * Fairness without evictions: every connection slot owns a floor (about the
 * budget over twice the connection cap: a 1 MiB request by default) that only it may use, and
 * the rest is shared, up to a per-connection bound. Requests that fit in a
 * connection's floor therefore always progress, however many other
 * connections sit on replies nobody reads; larger ones wait for shared room.
 * The sum of every connection's bytes never exceeds the budget.
 */
export interface BudgetLimits {
  /** Bytes buffered by the whole server. */
  total: number;
  /**
   * Bytes one connection may hold, at most a quarter of the shared part so
   * that no connection takes it all (one request alone may exceed it, or a
   * 32 MiB request could never run).
   */
  perConnection: number;
  /** Connections that may be open at once: each has its floor set aside. */
  slots: number;
  /** Each slot's own part (together about half of the total). */
  floor: number;
}

export interface BudgetStats {
  total: number;
  used: number;
  /** What one connection may always hold, whatever the others do. */
  floor: number;
  perConnection: number;
  /** The shared part above the floors, and how much of it is taken. */
  shared: number;
  sharedUsed: number;
  /** Connections waiting for shared room right now. */
  waiting: number;
  /** Times a connection had to stop reading for want of shared room. */
  stalls: number;
}

export class BufferBudget {
  readonly floor: number;
  readonly perConnection: number;
  private readonly shared: number;
  private sharedUsed = 0;
  private used = 0;
  private stalls = 0;
  /** Accounts that found no shared room, in the order they asked. */
  private readonly waiters: BudgetAccount[] = [];

  constructor(readonly limits: BudgetLimits) {
    if (limits.floor * limits.slots >= limits.total) throw new RangeError('the floors of the connection slots take the whole buffer budget');
    this.floor = limits.floor;
    this.shared = limits.total - this.floor * limits.slots;
    this.perConnection = Math.max(this.floor, Math.min(limits.perConnection, Math.floor(this.shared / 4)));
  }

  open(onRoom: () => void): BudgetAccount {
    return new BudgetAccount(this, onRoom);
  }

  get stats(): BudgetStats {
    return { total: this.limits.total, used: this.used, floor: this.floor, perConnection: this.perConnection, shared: this.shared, sharedUsed: this.sharedUsed, waiting: this.waiters.length, stalls: this.stalls };
  }

  /** @internal Moves an account from `from` to `to` bytes if the budget allows; force skips the shared check. */
  change(account: BudgetAccount, from: number, to: number, force: boolean): boolean {
    const extra = Math.max(0, to - this.floor) - Math.max(0, from - this.floor);
    if (extra > 0 && !force) {
      const head = this.waiters[0];
      if ((head !== undefined && head !== account) || this.sharedUsed + extra > this.shared) {
        if (!this.waiters.includes(account)) {
          this.waiters.push(account);
          this.stalls++;
        }
        return false;
      }
    }
    this.sharedUsed += extra;
    this.used += to - from;
    // Served: it leaves the line, and the next in line may fit in what is left.
    if (!force) this.forget(account);
    if (extra < 0) this.wake();
    return true;
  }

  /** @internal The account no longer asks (its connection stopped reading for good, or closed). */
  forget(account: BudgetAccount): void {
    const i = this.waiters.indexOf(account);
    if (i < 0) return;
    this.waiters.splice(i, 1);
    if (i === 0) this.wake();
  }

  /** First come, first served: the head of the line is told to try again (asynchronously, on its own stack). */
  private wake(): void {
    this.waiters[0]?.onRoom();
  }
}

/** One connection's share of the budget. */
export class BudgetAccount {
  private held = 0;
  private closed = false;

  constructor(
    private readonly budget: BufferBudget,
    /** Called when shared room may have been freed; must not re-enter (schedule the retry). */
    readonly onRoom: () => void,
  ) {}

  get bytes(): number {
    return this.held;
  }

  /** Takes `n` more bytes if both this connection's bound and the server's allow it. */
  tryCharge(n: number): boolean {
    if (this.closed) return false;
    if (this.held > 0 && this.held + n > this.budget.perConnection) return false;
    if (!this.budget.change(this, this.held, this.held + n, false)) return false;
    this.held += n;
    return true;
  }

  /** Takes `n` bytes whatever the bounds (a reply larger than what was charged for it). */
  force(n: number): void {
    if (this.closed || n <= 0) return;
    this.budget.change(this, this.held, this.held + n, true);
    this.held += n;
  }

  release(n: number): void {
    if (this.closed || n <= 0) return;
    const to = Math.max(0, this.held - n);
    this.budget.change(this, this.held, to, true);
    this.held = to;
  }

  /** This connection reads no more requests: it must not hold up the line. */
  stopWaiting(): void {
    this.budget.forget(this);
  }

  /** The connection is gone: whatever it held goes back, and later releases are ignored. */
  close(): void {
    if (this.closed) return;
    this.release(this.held);
    this.closed = true;
    this.budget.forget(this);
  }
}
