import type { GuestRun } from './guest-qemu.js';

/** Reading a soak guest's console: how far its rounds have come. */

/** The newest `STRATA-ROUND n` the console shows (0 before the first). */
export function lastRound(console: string): number {
  const rounds = [...console.replace(/\r/g, '').matchAll(/^STRATA-ROUND (\d+)$/gm)].map((m) => Number(m[1]));
  return rounds.length > 0 ? Math.max(...rounds) : 0;
}

/** The round count a finished soak reports with its checksums; throws when it printed none. */
export function soakRounds(run: GuestRun): number {
  const m = /STRATA-ROUNDS (\d+)/.exec(run.console);
  if (!m) throw new Error(`the soak guest reported no round count; its console ends:\n${run.console.slice(-2000)}`);
  return Number(m[1]);
}
