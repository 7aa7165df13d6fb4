import { setTimeout as sleep } from 'node:timers/promises';
import { strata } from './chain-cli.js';

/** `strata migrate` as the benchmark and the guest test run it, and how they tell it has finished. */

/** The names `strata volume list POOL` gives (through the control socket when the pool is served). */
export async function volumeNames(home: string, pool: string): Promise<string[]> {
  const { stdout } = await strata(home, '--json', 'volume', 'list', pool);
  return (JSON.parse(stdout) as { name: string }[]).map((v) => v.name);
}

/**
 * Runs `strata migrate FROM/VOL TO [--online] [extraArgs]` and waits until FROM no
 * longer lists the volume (whether the command waits for the pivot or
 * hands back a job): the move is durable and the source freed. Wall time
 * from the command's start (process start-up included) to its exit, or to
 * the check that found the source gone when it had not gone by then.
 */
export async function migrateVolume(home: string, from: string, volume: string, to: string, online: boolean, timeoutMs: number, extraArgs: string[] = []): Promise<{ seconds: number; output: string }> {
  const t0 = performance.now();
  const { stdout } = await strata(home, 'migrate', `${from}/${volume}`, to, ...(online ? ['--online'] : []), ...extraArgs);
  // A command that waits for the pivot has finished the move when it exits: its time, not that of the check after it.
  let end = performance.now();
  const deadline = Date.now() + timeoutMs;
  for (let first = true; (await volumeNames(home, from)).includes(volume); first = false) {
    if (first) end = NaN;
    if (Date.now() > deadline) {
      const jobs = await strata(home, 'job', 'list', from).then((r) => r.stdout, (e: Error) => e.message);
      throw new Error(`${timeoutMs} ms after strata migrate ${from}/${volume} ${to}, ${from} still holds the volume; jobs:\n${jobs}`);
    }
    await sleep(100);
  }
  if (Number.isNaN(end)) end = performance.now();
  return { seconds: (end - t0) / 1000, output: stdout };
}
