/**
 * Shared/exclusive locks over ranges of units (a volume's clusters, a direct
 * file's sectors, a RAID array's chunks or stripes), inclusive at both ends.
 * Reads share; writes, zeroing and discard are exclusive, because a
 * partial-unit write is a read-modify-write that must not interleave with
 * another on the same unit. Waiters are granted in arrival order among those
 * that conflict. Uncontended acquisition is synchronous and allocates one record.
 */
interface Holder {
  first: number;
  last: number;
  exclusive: boolean;
}

interface Waiter extends Holder {
  grant: (release: () => void) => void;
}

export class RangeLock {
  /**
   * An array, not a Set: at depth 1 it goes from one holder to none at every
   * request, and a Set rebuilt its table each time.
   */
  private readonly holders: Holder[] = [];
  private waiters: Waiter[] = [];

  acquire(first: number, last: number, exclusive: boolean): (() => void) | Promise<() => void> {
    const h: Holder = { first, last, exclusive };
    // Waiters keep their place: a newcomer that conflicts with one queues behind it.
    if (!this.conflicts(h) && !this.waiters.some((w) => overlaps(w, h) && (w.exclusive || exclusive))) {
      this.holders.push(h);
      return () => this.release(h);
    }
    return new Promise((grant) => this.waiters.push({ ...h, grant }));
  }

  /** Runs `fn` holding [first, last]; released however `fn` ends. */
  async with<T>(first: number, last: number, exclusive: boolean, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(first, last, exclusive);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private conflicts(h: Holder): boolean {
    for (const o of this.holders) if (overlaps(o, h) && (o.exclusive || h.exclusive)) return true;
    return false;
  }

  private release(h: Holder): void {
    const holders = this.holders;
    const i = holders.indexOf(h);
    if (i < 0) return;
    // Order among holders does not matter: the last one takes the freed place.
    const last = holders.pop()!;
    if (last !== h) holders[i] = last;
    if (this.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (!this.conflicts(w) && !still.some((s) => overlaps(s, w) && (s.exclusive || w.exclusive))) {
        const held: Holder = { first: w.first, last: w.last, exclusive: w.exclusive };
        this.holders.push(held);
        w.grant(() => this.release(held));
      } else {
        still.push(w);
      }
    }
    this.waiters = still;
  }
}

function overlaps(a: Holder, b: Holder): boolean {
  return a.first <= b.last && b.first <= a.last;
}
