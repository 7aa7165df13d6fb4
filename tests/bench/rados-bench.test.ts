import { describe, expect, it } from 'vitest';
import { childrenCpuUs, FIO_JOBS, type FioResult } from '../../bench/nbd-fio.js';
import { parseStatCpuTicks } from '../../bench/proc-cpu.js';
import { parseRadosBenchArgs, type RadosBenchOptions } from '../../bench/rados-options.js';
import { jobResult, radosMarkdown, reportedValue, type RadosReport, type RadosSample } from '../../bench/rados-report.js';

const MIB = 2 ** 20;

const parse = (...argv: string[]): RadosBenchOptions => {
  const o = parseRadosBenchArgs(argv);
  if (o === 'help') throw new Error('help');
  return o;
};

describe('npm run bench:rados options', () => {
  it('runs the four jobs on every server, 3 rounds × 8 s of 1G images, on a cluster of its own, when told nothing', () => {
    const o = parse();
    expect(o.jobs.map((j) => j.name)).toEqual(['randread-4k-qd16', 'randwrite-4k-qd16', 'read-1m-qd4', 'write-1m-qd4']);
    expect(o.setups.map((s) => s.name)).toEqual(['strata', 'strata-raw', 'fio-rbd', 'rbd-nbd']);
    expect(o).toMatchObject({ rounds: 3, runtimeSec: 8, size: 1024 * MIB, cephConf: undefined, osds: 3, id: 'admin', strataPool: 'strata', rbdPool: 'rbd', json: false });
  });

  it('takes servers, jobs, a given cluster and its pools, in the order given and each once', () => {
    const o = parse('--servers', 'fio-rbd, strata,fio-rbd', '--jobs', 'write-1m-qd4,randread-4k-qd1', '--ceph-conf', '/etc/ceph/ceph.conf', '--id', 'bench', '--rbd-pool', 'vms', '--size', '256M', '--rounds', '1', '--runtime', '5', '--json');
    expect(o.setups.map((s) => s.name)).toEqual(['fio-rbd', 'strata']);
    expect(o.jobs.map((j) => j.name)).toEqual(['write-1m-qd4', 'randread-4k-qd1']);
    expect(o).toMatchObject({ cephConf: '/etc/ceph/ceph.conf', id: 'bench', rbdPool: 'vms', strataPool: 'strata', size: 256 * MIB, rounds: 1, runtimeSec: 5, json: true });
  });

  it('refuses what it cannot run, naming the option', () => {
    expect(() => parse('--servers', 'strata,krbd')).toThrow(/--servers: unknown 'krbd' \(of: strata, strata-raw, fio-rbd, rbd-nbd\)/);
    expect(() => parse('--servers', ' , ')).toThrow(/--servers names none/);
    expect(() => parse('--jobs', 'randrw')).toThrow(/--jobs: unknown 'randrw'/);
    expect(() => parse('--rounds', '0')).toThrow(/--rounds must be a whole number/);
    expect(() => parse('--osds', 'two')).toThrow(/--osds must be a whole number/);
    expect(() => parse('--size', '8M')).toThrow(/--size must be a whole number of MiB, at least 16M/);
    expect(() => parse('--size', '100000K')).toThrow(/--size must be a whole number of MiB/);
    expect(() => parse('--bogus')).toThrow();
  });

  it('answers --help with the usage', () => {
    expect(parseRadosBenchArgs(['--help'])).toBe('help');
  });
});

const job = (name: string) => FIO_JOBS.find((j) => j.name === name)!;

function fio(value: number): FioResult {
  return { value, ios: 1000, latMeanUs: 900, latP99Us: 2500, latP999Us: 4000, latMaxUs: 9000, fioCpuUs: 30_000 };
}

function sample(jobName: string, value: number, server: { cpu: number; loop?: number; rss: number } | undefined, round = 0): RadosSample {
  const r = fio(value);
  return {
    round,
    ...r,
    reported: reportedValue(job(jobName), r),
    serverCpuUsPerIo: server?.cpu ?? NaN,
    serverLoopCpuUsPerIo: server ? (server.loop ?? server.cpu / 2) : NaN,
    fioCpuUsPerIo: r.fioCpuUs / r.ios,
    clusterCpuUsPerIo: 210,
    peakRssBytes: server ? server.rss * MIB : NaN,
  };
}

const report: RadosReport = {
  date: '2026-01-01T00:00:00.000Z',
  host: { cpus: 2, load: [1, 1, 1] },
  options: { runtimeSec: 5, rounds: 2, size: 1024 * MIB, jobs: ['randread-4k-qd16', 'write-1m-qd4'] },
  cluster: { detail: 'a one-host cluster of its own', own: true },
  anchor: 'fio-rbd',
  servers: [
    { name: 'strata', detail: 'a pool on RADOS', lifetimePeakRssBytes: 150 * MIB },
    { name: 'fio-rbd', detail: 'librbd in fio' },
    { name: 'rbd-nbd', detail: 'the kernel', notRun: 'needs the kernel nbd module' },
  ],
  results: [
    jobResult(job('randread-4k-qd16'), 'strata', [sample('randread-4k-qd16', 6000, { cpu: 40, rss: 120 }), sample('randread-4k-qd16', 8000, { cpu: 60, loop: 20, rss: 130 }, 1)]),
    jobResult(job('randread-4k-qd16'), 'fio-rbd', [sample('randread-4k-qd16', 14_000, undefined), sample('randread-4k-qd16', 14_000, undefined, 1)]),
    jobResult(job('write-1m-qd4'), 'strata', [sample('write-1m-qd4', 2 ** 20 * 100 / 1e6, { cpu: 900, rss: 140 })]),
    jobResult(job('write-1m-qd4'), 'fio-rbd', [sample('write-1m-qd4', 2 ** 20 * 200 / 1e6, undefined)]),
  ],
};

describe('the RADOS benchmark tables', () => {
  const md = radosMarkdown(report);

  it('gives a row per server, a median per job with its ratio to fio-rbd, and the row of a server not run with why', () => {
    expect(md).toContain('| server | randread-4k-qd16 (IOPS) | write-1m-qd4 (MiB/s) |');
    expect(md).toContain('| strata | 7000 (0.50×) | 100 (0.50×) |');
    expect(md).toContain('| fio-rbd | 14.0k | 200 |');
    expect(md).toContain('| rbd-nbd | not run: needs the kernel nbd module |  |');
    expect(md).toContain('- rbd-nbd: not run: needs the kernel nbd module');
    expect(md).toContain('Ceph: a one-host cluster of its own');
  });

  it('shows latency, server CPU per I/O with its main thread\'s share, fio and cluster CPU and the server’s peak RSS, a dash where there is no server', () => {
    expect(md).toContain('| randread-4k-qd16 | strata | 900 / 2500 | 50.0 (20.0) | 30.0 | 210.0 | 130 MiB |');
    expect(md).toContain('| randread-4k-qd16 | fio-rbd | 900 / 2500 | — | 30.0 | 210.0 | — |');
    expect(md).toContain('| write-1m-qd4 | strata | 900 / 2500 | 900.0 (450.0) | 30.0 | 210.0 | 140 MiB |');
    expect(md).not.toMatch(/\| [a-z0-9-]+ \| rbd-nbd \|/);
  });
});

describe('CPU readings', () => {
  it('adds up the children’s user and system time of bash’s `times`, NaN when it printed none', () => {
    expect(childrenCpuUs('fio: some warning\n0m0.002s 0m0.000s\n0m1.148s 0m0.012s\n')).toBeCloseTo(1_160_000);
    expect(childrenCpuUs('0m0.000s 0m0.000s\n1m2.500s 0m0.500s\n')).toBeCloseTo(63_000_000);
    expect(childrenCpuUs('killed')).toBeNaN();
  });

  it('reads utime + stime from /proc/PID/stat past a command name with spaces and parentheses', () => {
    const stat = '4242 (rbd (nbd) x) S 1 4242 4242 0 -1 4194560 3000 0 0 0 170 35 0 0 20 0 8 0 12345 1000000 2000 18446744073709551615';
    expect(parseStatCpuTicks(stat)).toBe(205);
  });
});
