/** A pending read: its byte offset in the file, and the numbers that say what it is for. */
export type HeapRow<F extends string> = { at: number } & { [K in F]: number };

/**
 * A min-heap of pending reads keyed by file offset, so an image is read
 * front to back whatever order its tables point in. Rows are kept as
 * columns of numbers in typed arrays: a large image queues millions of
 * reads, and one object per read would cost several times the 8 bytes a
 * field takes here. Rows come out as fresh objects; changing one changes
 * nothing in the heap.
 */
export class OffsetHeap<F extends string> {
  private keys = new Float64Array(64);
  private columns: Float64Array<ArrayBuffer>[];
  /** The row being sifted, held apart while others move into its way. */
  private readonly held: Float64Array;
  private n = 0;

  constructor(private readonly fields: readonly F[]) {
    this.columns = fields.map(() => new Float64Array(64));
    this.held = new Float64Array(fields.length);
  }

  get size(): number {
    return this.n;
  }

  push(row: HeapRow<F>): void {
    if (this.n === this.keys.length) this.grow();
    const fields = this.fields;
    for (let c = 0; c < fields.length; c++) this.held[c] = (row as Record<string, number>)[fields[c]!]!;
    this.place(this.n++, row.at);
  }

  /** The row with the lowest offset, without removing it. */
  peek(): HeapRow<F> | undefined {
    return this.n === 0 ? undefined : this.row(0);
  }

  pop(): HeapRow<F> | undefined {
    const top = this.peek();
    if (!top) return undefined;
    const last = --this.n;
    if (last > 0) {
      const at = this.keys[last]!;
      for (let c = 0; c < this.columns.length; c++) this.held[c] = this.columns[c]![last]!;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= last) break;
        const r = l + 1;
        const child = r < last && this.keys[r]! < this.keys[l]! ? r : l;
        if (this.keys[child]! >= at) break;
        this.move(child, i);
        i = child;
      }
      this.put(i, at);
    }
    return top;
  }

  /** Sifts the held row, keyed `at`, up from the free slot `i`. */
  private place(i: number, at: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.keys[parent]! <= at) break;
      this.move(parent, i);
      i = parent;
    }
    this.put(i, at);
  }

  private row(i: number): HeapRow<F> {
    const row = { at: this.keys[i]! } as HeapRow<F>;
    for (let c = 0; c < this.fields.length; c++) (row as Record<string, number>)[this.fields[c]!] = this.columns[c]![i]!;
    return row;
  }

  private put(i: number, at: number): void {
    this.keys[i] = at;
    for (let c = 0; c < this.columns.length; c++) this.columns[c]![i] = this.held[c]!;
  }

  private move(from: number, to: number): void {
    this.keys[to] = this.keys[from]!;
    for (let c = 0; c < this.columns.length; c++) this.columns[c]![to] = this.columns[c]![from]!;
  }

  private grow(): void {
    const widen = (a: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> => {
      const b = new Float64Array(a.length * 2);
      b.set(a);
      return b;
    };
    this.keys = widen(this.keys);
    this.columns = this.columns.map(widen);
  }
}
