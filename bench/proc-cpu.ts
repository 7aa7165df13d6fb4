import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** utime + stime of a process (or with `mainThread`, of its first thread alone), in clock ticks, from /proc. */
export function cpuTicks(pid: number, mainThread = false): number {
  return parseStatCpuTicks(fs.readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8'));
}

/** utime + stime of a /proc/PID/stat text. */
export function parseStatCpuTicks(stat: string): number {
  // The command name may hold spaces; fields count from after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/**
 * CPU time of processes in microseconds, from /proc; a process gone counts
 * nothing. With `mainThread`, only each one's first thread: a Node server's
 * event loop, apart from the threads of the libraries it calls.
 */
export function cpuUs(pids: readonly number[], mainThread = false): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      ticks += cpuTicks(pid, mainThread);
    } catch {
      // Exited: what it spent is no longer to be read.
    }
  }
  return (ticks / clockTicksPerSecond()) * 1e6;
}

let ticksPerSecond: number | undefined;
export function clockTicksPerSecond(): number {
  ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return ticksPerSecond;
}
