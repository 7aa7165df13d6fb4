import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * What every benchmark's command does around its measurements: parse the
 * options (or print the usage), work in a fresh folder under the temp dir
 * unless --dir names one, write every sample to the JSON file and print the
 * markdown tables (or the JSON).
 */
export interface BenchRunOptions {
  dir: string | undefined;
  out: string;
  json: boolean;
  keep: boolean;
}

/** The benchmark's folder for `body`: `o.dir`, or a fresh one removed afterwards unless --keep. */
export async function inBenchDir<T>(o: BenchRunOptions, name: string, log: (line: string) => void, body: (dir: string) => Promise<T>): Promise<T> {
  const made = o.dir === undefined;
  const dir = o.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), `strata-${name}-`));
  fs.mkdirSync(dir, { recursive: true });
  try {
    return await body(dir);
  } finally {
    if (made && !o.keep) fs.rmSync(dir, { recursive: true, force: true });
    else if (made) log(`pools and images kept in ${dir}`);
  }
}

export interface BenchCli<O extends BenchRunOptions, R> {
  name: string;
  usage: string;
  parse(argv: string[]): O | 'help';
  run(o: O, log: (line: string) => void): Promise<R>;
  markdown(report: R): string;
}

export async function benchMain<O extends BenchRunOptions, R>(cli: BenchCli<O, R>, argv: string[]): Promise<number> {
  try {
    const opts = cli.parse(argv);
    if (opts === 'help') {
      process.stdout.write(`${cli.usage}\n`);
      return 0;
    }
    const report = await cli.run(opts, (line) => process.stderr.write(`${line}\n`));
    fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
    const json = `${JSON.stringify(report, null, 2)}\n`;
    fs.writeFileSync(opts.out, json);
    process.stdout.write(opts.json ? json : `${cli.markdown(report)}\n\nJSON: ${opts.out}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`${cli.name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

/** The usage lines of BENCH_RUN_FLAGS, options padded to `width` columns as the benchmark's own. */
export function benchRunUsage(name: string, width: number): string {
  const line = (opt: string, what: string): string => `  ${opt.padEnd(width)} ${what}`;
  return [
    line('--dir DIR', 'where pools and images go (default a fresh folder under the temp dir)'),
    line('--out FILE', `JSON results (default .scratch/bench/${name}-<time>.json)`),
    line('--json', 'print the JSON on stdout instead of the markdown tables'),
    line('--keep', 'keep the pools and images'),
  ].join('\n');
}

/** The parseArgs options every benchmark takes besides its own. */
export const BENCH_RUN_FLAGS = {
  dir: { type: 'string' },
  out: { type: 'string' },
  json: { type: 'boolean', default: false },
  keep: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** Readers of numeric options whose defaults depend on --quick. */
export function optionReaders(quick: boolean, parseSize: (text: string) => number) {
  return {
    whole(name: string, text: string | undefined, full: number, fast: number, min = 1): number {
      if (text === undefined) return quick ? fast : full;
      const n = Number(text);
      if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} must be a whole number ≥ ${min}, not '${text}'`);
      return n;
    },
    size(text: string | undefined, full: string, fast: string): number {
      return parseSize(text ?? (quick ? fast : full));
    },
  };
}
