/**
 * A min-heap of grain runs keyed by file offset, kept in typed arrays: a
 * large image maps millions of grains, and one object per grain would cost
 * many times the 24 bytes a run takes here.
 */
export interface GrainRun {
  /** Byte offset in the file. */
  at: number;
  /** Index of the first grain in the virtual disk. */
  grain: number;
  /** Grains stored back to back from `at`, virtually consecutive. */
  count: number;
}

export class RunHeap {
  private keys = new Float64Array(64);
  private grains = new Float64Array(64);
  private counts = new Float64Array(64);
  private n = 0;

  get size(): number {
    return this.n;
  }

  push(run: GrainRun): void {
    if (this.n === this.keys.length) this.grow();
    let i = this.n++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.keys[parent]! <= run.at) break;
      this.move(parent, i);
      i = parent;
    }
    this.set(i, run);
  }

  /** The run with the lowest offset, without removing it. */
  peek(): GrainRun | undefined {
    return this.n === 0 ? undefined : { at: this.keys[0]!, grain: this.grains[0]!, count: this.counts[0]! };
  }

  pop(): GrainRun | undefined {
    const top = this.peek();
    if (!top) return undefined;
    const last = --this.n;
    if (last > 0) {
      const moving = { at: this.keys[last]!, grain: this.grains[last]!, count: this.counts[last]! };
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= last) break;
        const r = l + 1;
        const child = r < last && this.keys[r]! < this.keys[l]! ? r : l;
        if (this.keys[child]! >= moving.at) break;
        this.move(child, i);
        i = child;
      }
      this.set(i, moving);
    }
    return top;
  }

  private set(i: number, run: GrainRun): void {
    this.keys[i] = run.at;
    this.grains[i] = run.grain;
    this.counts[i] = run.count;
  }

  private move(from: number, to: number): void {
    this.keys[to] = this.keys[from]!;
    this.grains[to] = this.grains[from]!;
    this.counts[to] = this.counts[from]!;
  }

  private grow(): void {
    const widen = (a: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> => {
      const b = new Float64Array(a.length * 2);
      b.set(a);
      return b;
    };
    this.keys = widen(this.keys);
    this.grains = widen(this.grains);
    this.counts = widen(this.counts);
  }
}
