import { expect } from 'vitest';
import { parseFio, tool, type FioJob } from '../nbd/support.js';

/** A fio job over NBD that writes random blocks and reads every one back against its crc32c. */
export interface FioVerifyJob {
  uri: string;
  size: number;
  offset?: number;
  /** Block sizes and their shares, as fio's bssplit (default 4K and 64K, half each). */
  bssplit?: string;
  iodepth?: number;
  /** Jobs on their own connections, each over its own `size` bytes from `offset + i·size`. */
  numjobs?: number;
  /** The same seed writes the same blocks in the same order: a later verify-only run can check them. */
  seed?: number;
  /** Only read back and check what an earlier run of the same job wrote. */
  verifyOnly?: boolean;
  /** Check each batch of this many blocks while writing goes on, so reads and writes interleave throughout. */
  verifyBacklog?: number;
  /** Most bytes per second written (fio's notation, e.g. 12m), so that the job lasts as long whatever the machine. */
  writeRate?: string;
}

export function fioVerifyArgs(j: FioVerifyJob): string[] {
  const jobs = j.numjobs ?? 1;
  return [
    '--name=verify', '--ioengine=nbd', `--uri=${j.uri}`, '--rw=randwrite', `--bssplit=${j.bssplit ?? '4k/50:64k/50'}`,
    `--iodepth=${j.iodepth ?? 16}`, `--size=${j.size}`, `--offset=${j.offset ?? 0}`, `--randseed=${j.seed ?? 7}`,
    ...(jobs > 1 ? [`--numjobs=${jobs}`, `--offset_increment=${j.size}`] : []),
    '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json',
    ...(j.verifyOnly === true ? ['--verify_only'] : ['--do_verify=1']),
    ...(j.verifyBacklog !== undefined ? [`--verify_backlog=${j.verifyBacklog}`] : []),
    ...(j.writeRate !== undefined ? [`--rate=,${j.writeRate}`] : []),
  ];
}

/** Runs the job; every fio job must end without an error, having written (unless verify-only) and checked all its bytes. */
export async function fioVerify(j: FioVerifyJob, timeoutMs = 300_000): Promise<FioJob[]> {
  const jobs = parseFio(await tool('fio', fioVerifyArgs(j), timeoutMs));
  expect(jobs.length).toBe(j.numjobs ?? 1);
  for (const job of jobs) {
    expect(job.error, `fio job ${job.jobname}`).toBe(0);
    if (j.verifyOnly !== true) expect(job.write.io_bytes).toBe(j.size);
    expect(job.read.io_bytes).toBeGreaterThanOrEqual(j.size);
  }
  return jobs;
}
