import { JobError, type JobControl } from '../src/host/jobs.js';
import { ProgressBar } from './output.js';

/**
 * The progress bar of a command whose work is a job: every update is the
 * job's progress too (what `strata job show` reports), and the point where
 * a cancelled job's copy stops.
 */
export class JobProgressBar extends ProgressBar {
  constructor(
    label: string,
    total: number,
    private readonly job: JobControl,
  ) {
    super(label, total);
    job.progress(0, total);
  }

  override update(done: number): void {
    this.job.progress(done);
    // Only a cancel stops the copy here: Ctrl-C has its own way out of the copy loop, with its own message.
    if (this.job.signal.aborted && this.job.signal.reason instanceof JobError) throw this.job.signal.reason;
    super.update(done);
  }
}
