import { describe, expect, it } from 'vitest';
import { markdownTables, maxOf, medianOf, type BenchReport, type JobResult } from '../../bench/nbd-report.js';
import { parseStatusMemory } from '../../bench/proc-memory.js';

const MIB = 2 ** 20;

function result(job: string, server: string, median: number, peakRssMiB: number): JobResult {
  return { job, unit: 'IOPS', server, median, medianLatUs: 100, medianLatP99Us: 250, medianCpuUsPerIo: 12.5, peakRssBytes: peakRssMiB * MIB, samples: [] };
}

const report: BenchReport = {
  date: '2026-01-01T00:00:00.000Z',
  host: { cpus: 2, load: [1, 1, 1] },
  options: { runtimeSec: 2, rounds: 1, imageSize: 256 * MIB, ioSize: 128 * MIB },
  comparisons: [
    { name: 'plain', servers: ['strata', 'qemu-nbd', 'nbdkit'] },
    { name: 'chain', servers: ['strata-chain64', 'qemu-nbd'] },
  ],
  servers: [
    { name: 'strata', detail: 'a pool', cacheBudgetBytes: 64 * MIB, lifetimePeakRssBytes: 150 * MIB },
    { name: 'qemu-nbd', detail: 'qcow2', lifetimePeakRssBytes: 20 * MIB },
    { name: 'nbdkit', detail: 'file', lifetimePeakRssBytes: 10 * MIB },
    { name: 'strata-chain64', detail: 'a chain', cacheBudgetBytes: 64 * MIB, lifetimePeakRssBytes: 200 * MIB },
  ],
  results: [result('j', 'strata', 30_000, 120), result('j', 'qemu-nbd', 20_000, 12), result('j', 'nbdkit', 40_000, 8), result('j', 'strata-chain64', 10_000, 180)],
};

describe('the NBD benchmark tables', () => {
  const md = markdownTables(report);

  it('gives each comparison its table, the first server against each other', () => {
    expect(md).toContain('### plain: strata against qemu-nbd, nbdkit');
    expect(md).toContain('| job | unit | strata | qemu-nbd | nbdkit | strata / qemu-nbd | strata / nbdkit |');
    expect(md).toContain('| j | IOPS | 30.0k | 20.0k | 40.0k | 1.50× | 0.75× |');
    expect(md).toContain('### chain: strata-chain64 against qemu-nbd');
    expect(md).toContain('| j | IOPS | 10.0k | 20.0k | 0.50× |');
  });

  it('shows latency, p99, server CPU and peak RSS per job, and Strata’s peak against its cache budget', () => {
    expect(md).toContain('| j | 100 / 250 · 12.5 · 120 MiB | 100 / 250 · 12.5 · 12 MiB | 100 / 250 · 12.5 · 8 MiB |');
    expect(md).toContain('metadata cache budget of 64M');
    expect(md).toContain('- strata: highest peak RSS during the jobs 120 MiB, within budget + 100 MiB = 164 MiB');
    expect(md).toContain('- strata-chain64: highest peak RSS during the jobs 180 MiB, over budget + 100 MiB = 164 MiB');
  });

  it('takes medians and maxima over the samples that have a value', () => {
    expect(medianOf([3, NaN, 1, 2])).toBe(2);
    expect(medianOf([4, 1, NaN, 2, 3])).toBe(2.5);
    expect(medianOf([NaN])).toBeNaN();
    expect(maxOf([NaN, 3, 7, NaN, 5])).toBe(7);
    expect(maxOf([])).toBeNaN();
  });
});

describe('/proc/PID/status memory fields', () => {
  it('reads VmRSS and VmHWM in bytes, NaN when absent', () => {
    const status = 'Name:\tnode\nVmPeak:\t 1234 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t7\n';
    expect(parseStatusMemory(status)).toEqual({ rss: 100 * MIB, peak: 200 * MIB });
    expect(parseStatusMemory('Name:\tkthreadd\nThreads:\t1\n')).toEqual({ rss: NaN, peak: NaN });
  });
});
