import type { ContentRun } from '../image-writer.js';

export const ZERO = 1;
export const DATA = 2;

/**
 * Content runs rounded out to whole clusters: a cluster holding any data is
 * data, else one holding any zero run reads zeroes, else it stays
 * unallocated. Kept as parallel arrays (one entry per run, not per cluster).
 */
export class ClusterRuns {
  readonly start: number[] = [];
  readonly end: number[] = [];
  readonly kind: number[] = [];

  constructor(private readonly clusterSize: number) {}

  add(run: ContentRun): void {
    if (run.kind === 'hole' || run.length === 0) return;
    const kind = run.kind === 'data' ? DATA : ZERO;
    let first = Math.floor(run.offset / this.clusterSize);
    const end = Math.ceil((run.offset + run.length) / this.clusterSize);
    const n = this.kind.length - 1;
    // Runs come in order, so only the cluster a previous run ended in can be shared.
    if (n >= 0 && this.end[n]! > first) {
      if (kind > this.kind[n]!) {
        this.end[n] = first;
        if (this.end[n] === this.start[n]) this.pop();
      } else first = this.end[n]!;
    }
    if (first >= end) return;
    const m = this.kind.length - 1;
    if (m >= 0 && this.end[m] === first && this.kind[m] === kind) this.end[m] = end;
    else {
      this.start.push(first);
      this.end.push(end);
      this.kind.push(kind);
    }
  }

  private pop(): void {
    this.start.pop();
    this.end.pop();
    this.kind.pop();
  }
}
