/** The commands an export counts apart; 'zero' is WRITE_ZEROES. */
export const COMMAND_KINDS = ['read', 'write', 'flush', 'trim', 'zero', 'cache', 'block_status'] as const;
export type CommandKind = (typeof COMMAND_KINDS)[number];

/**
 * Upper bounds (seconds) of the latency buckets: 50 µs to 10 s, roughly
 * three per decade, so a page-cache hit and a disk that stalls both land in
 * a bucket of their own.
 */
export const LATENCY_BOUNDS: readonly number[] = [50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 10];

/** One command's counts on one export. Plain numbers: the request path pays a few additions, a scrape reads them. */
export class CommandStats {
  /** Requests answered, with success or an error. */
  ops = 0;
  /** Bytes read, written, trimmed or zeroed by the requests that succeeded. */
  bytes = 0;
  /** Requests answered with an error: refused (bad range, read-only) or failed by the device. */
  errors = 0;
  /** Per bucket of LATENCY_BOUNDS, and one past the last (+Inf); not cumulative. */
  readonly buckets = new Float64Array(LATENCY_BOUNDS.length + 1);
  /** Seconds spent by the requests timed, from admission (range lock wait included) to the reply being queued. */
  latencySum = 0;
  /** Requests timed (refusals are counted, not timed). */
  timed = 0;

  observe(seconds: number): void {
    let i = 0;
    while (i < LATENCY_BOUNDS.length && seconds > LATENCY_BOUNDS[i]!) i++;
    this.buckets[i]!++;
    this.latencySum += seconds;
    this.timed++;
  }
}

/** What one export served, over every connection it had since the server started. */
export class ExportStats {
  /** Connections in the transmission phase on this export right now. */
  connections = 0;
  readonly commands: Record<CommandKind, CommandStats>;

  constructor(readonly name: string) {
    const c = {} as Record<CommandKind, CommandStats>;
    for (const k of COMMAND_KINDS) c[k] = new CommandStats();
    this.commands = c;
  }
}
