import type { RaidArray, ScrubReport } from '../raid/index.js';
import type { Jobs } from './jobs.js';

/** Runs a scrub of the array as a job of its pool; a cancel stops it between steps (what it checked is not reported). */
export function scrubJob(jobs: Jobs, array: RaidArray, repair: boolean, onProgress?: (fraction: number) => void): Promise<ScrubReport> {
  const size = array.size;
  const restart = `strata raid scrub ${jobs.pool}${repair ? ' --repair' : ''}`;
  return jobs.run({ kind: 'scrub', target: array.status().name, total: size, restart }, (ctl) =>
    array.scrub({
      repair,
      signal: ctl.signal,
      onProgress: (f) => {
        ctl.progress(Math.round(f * size));
        onProgress?.(f);
      },
    }),
  );
}
