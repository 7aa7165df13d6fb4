import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { formatFields, formatTable, ProgressBar } from '../../bin/output.js';

describe('human output', () => {
  it('aligns table columns, numbers to the right, with no trailing blanks', () => {
    const rows = [
      { name: 'pool0', size: '100G', path: '/a' },
      { name: 'long-pool-name', size: '4K', path: '/bb/cc' },
    ];
    const text = formatTable(rows, [
      { header: 'NAME', value: (r) => r.name },
      { header: 'SIZE', value: (r) => r.size, align: 'right' },
      { header: 'PATH', value: (r) => r.path },
    ]);
    expect(text).toBe(['NAME            SIZE  PATH', 'pool0           100G  /a', 'long-pool-name    4K  /bb/cc', ''].join('\n'));
  });

  it('aligns key: value fields', () => {
    expect(formatFields([['name', 'p0'], ['cluster size', '64K'], ['empty', '']])).toBe('name:         p0\ncluster size: 64K\nempty:\n');
  });
});

/** A stand-in for stderr that records what the bar draws. */
function terminal(isTTY: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  const out: string[] = [];
  const stream = { isTTY, columns: 80, write: (s: string) => out.push(s) > 0 } as unknown as NodeJS.WriteStream;
  return { stream, text: () => out.join('') };
}

describe('progress bar', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.stubEnv('STRATA_PROGRESS_DELAY', undefined);
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllEnvs();
  });

  it('stays silent for the first second, then draws at most ten times a second, then erases itself', () => {
    const t = terminal(true);
    const bar = new ProgressBar('import p0/v', 1000, t.stream);
    bar.update(100);
    vi.advanceTimersByTime(999);
    bar.update(200);
    expect(t.text()).toBe('');
    vi.advanceTimersByTime(1);
    bar.update(500);
    expect(t.text()).toMatch(/^\rimport p0\/v \[#{25}\.{25}\]  50% [\d.]+\/s\x1b\[K$/);
    const drawn = t.text().length;
    vi.advanceTimersByTime(50);
    bar.update(600);
    expect(t.text().length).toBe(drawn);
    vi.advanceTimersByTime(50);
    bar.update(1000);
    expect(t.text().slice(drawn)).toMatch(/\[#{50}\] 100%/);
    bar.finish();
    expect(t.text().endsWith('\r\x1b[K')).toBe(true);
  });

  it('never draws when stderr is not a terminal', () => {
    const t = terminal(false);
    const bar = new ProgressBar('export p0/v', 1000, t.stream);
    vi.advanceTimersByTime(5000);
    bar.update(500);
    bar.finish();
    expect(t.text()).toBe('');
  });

  it('leaves nothing behind for a job that ended before it drew', () => {
    const t = terminal(true);
    const bar = new ProgressBar('import p0/v', 1000, t.stream);
    bar.update(1000);
    bar.finish();
    expect(t.text()).toBe('');
  });

  it('takes its delay from STRATA_PROGRESS_DELAY, ignoring nonsense', () => {
    vi.stubEnv('STRATA_PROGRESS_DELAY', '0');
    const t = terminal(true);
    new ProgressBar('x', 10, t.stream).update(1);
    expect(t.text()).not.toBe('');
    vi.stubEnv('STRATA_PROGRESS_DELAY', 'soon');
    const u = terminal(true);
    new ProgressBar('x', 10, u.stream).update(1);
    expect(u.text()).toBe('');
  });
});
