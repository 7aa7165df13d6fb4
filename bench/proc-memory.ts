import fs from 'node:fs';

/** A process's resident memory now and at its peak (VmRSS, VmHWM from /proc), in bytes. */
export function residentMemory(pid: number): { rss: number; peak: number } {
  return parseStatusMemory(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
}

/** VmRSS and VmHWM of a /proc/PID/status text, in bytes (NaN for a field it lacks, as a kernel thread's status does). */
export function parseStatusMemory(status: string): { rss: number; peak: number } {
  const kib = (field: string): number => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return m ? Number(m[1]) * 1024 : NaN;
  };
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}

/**
 * Samples a process's VmRSS every `everyMs` until stop(), which gives the
 * highest value seen: the peak of one measured run, where VmHWM would be
 * the peak since the process started (its prefill included).
 */
export function sampleRss(pid: number, everyMs = 200): { stop(): number } {
  let peak = NaN;
  const sample = () => {
    try {
      const { rss } = residentMemory(pid);
      if (Number.isNaN(peak) || rss > peak) peak = rss;
    } catch {
      // The process is gone; its last samples stand.
    }
  };
  sample();
  const timer = setInterval(sample, everyMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}
