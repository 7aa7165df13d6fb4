import type { Command } from 'commander';
import { formatSize } from './size.js';

/** The root options every command sees (they may be given before or after the subcommand). */
export interface GlobalOptions {
  home: string;
  json: boolean;
}

export function globals(cmd: Command): GlobalOptions {
  const o = cmd.optsWithGlobals<{ home: string; json?: boolean }>();
  // STRATA_HOME= (set but empty) means the default, not the current directory.
  return { home: o.home === '' ? './strata-data' : o.home, json: o.json === true };
}

// `strata map … | head` closes stdout early: that is the reader's choice, not an error worth a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  throw err;
});

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export interface Column<Row> {
  header: string;
  value: (row: Row) => string;
  /** Numbers and sizes read best right-aligned. */
  align?: 'left' | 'right';
}

/** An aligned table with a header line; the last column is not padded, so lines carry no trailing blanks. */
export function formatTable<Row>(rows: Row[], columns: Column<Row>[]): string {
  const cells = rows.map((row) => columns.map((c) => c.value(row)));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]): string =>
    values
      .map((v, i) => {
        const last = i === values.length - 1;
        if (columns[i]!.align === 'right') return v.padStart(widths[i]!);
        return last ? v : v.padEnd(widths[i]!);
      })
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n') + '\n';
}

export function printTable<Row>(rows: Row[], columns: Column<Row>[]): void {
  process.stdout.write(formatTable(rows, columns));
}

/** `key: value` lines with the values aligned. */
export function formatFields(fields: [string, string][]): string {
  const width = Math.max(...fields.map(([k]) => k.length)) + 1;
  return fields.map(([k, v]) => `${(k + ':').padEnd(width)} ${v}`.trimEnd()).join('\n') + '\n';
}

export function printFields(fields: [string, string][]): void {
  process.stdout.write(formatFields(fields));
}

/** Human messages (confirmations) go to stdout unless JSON was asked for, where the JSON replaces them. */
export function report(g: GlobalOptions, json: unknown, human: string): void {
  if (g.json) printJson(json);
  else process.stdout.write(human + '\n');
}

/** Warnings go to stderr for people; with --json they travel in the result's "warnings" array instead. */
export function warn(g: GlobalOptions, warnings: readonly string[]): void {
  if (!g.json) for (const w of warnings) process.stderr.write(`strata: warning: ${w}\n`);
}

/**
 * A progress bar on stderr for long jobs. It appears only when stderr is a
 * terminal and the job has already run for a second (STRATA_PROGRESS_DELAY
 * seconds, as git's GIT_PROGRESS_DELAY), so quick commands and scripts (pipes,
 * files, CI logs) never see it; it redraws at most ten times a second and
 * erases itself when the job ends.
 */
export class ProgressBar {
  private readonly label: string;
  private readonly total: number;
  private readonly started = Date.now();
  private readonly delayMs = progressDelayMs();
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private lastDraw = 0;
  private drawn = false;

  constructor(label: string, total: number, stream: NodeJS.WriteStream = process.stderr) {
    this.label = label;
    this.total = total;
    this.stream = stream;
    this.tty = stream.isTTY === true;
  }

  update(done: number): void {
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.started < this.delayMs || now - this.lastDraw < 100) return;
    this.lastDraw = now;
    this.drawn = true;
    this.stream.write(`\r${this.render(done, now)}\x1b[K`);
  }

  finish(): void {
    if (this.drawn) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }

  private render(done: number, now: number): string {
    const fraction = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const columns = this.stream.columns ?? 80;
    const seconds = (now - this.started) / 1000;
    const rate = done / seconds;
    const tail = ` ${(fraction * 100).toFixed(0).padStart(3)}% ${formatRate(rate)}`;
    const width = Math.max(10, Math.min(50, columns - this.label.length - tail.length - 4));
    const filled = Math.round(fraction * width);
    return `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]${tail}`;
  }
}

function progressDelayMs(): number {
  const text = process.env.STRATA_PROGRESS_DELAY?.trim();
  const seconds = text ? Number(text) : NaN;
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : 1000;
}

function formatRate(bytesPerSecond: number): string {
  return `${formatSize(Math.round(bytesPerSecond))}/s`;
}
